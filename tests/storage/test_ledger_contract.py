"""The ledger contract, run against every backend (memory, SQLite, PostgreSQL) with an injected clock."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import pytest

from rhetor.budget import BudgetLedger
from rhetor.config.models import BudgetLimitsSpec
from rhetor.errors import BudgetExceededError
from rhetor.storage import ReservationStateError, Storage, UnknownReservationError
from rhetor.types import Usage

NOON = datetime(2025, 3, 12, 12, 0, tzinfo=UTC)  # a Wednesday
GLOBAL_DAILY_1 = {"global": {"daily": 1.0}}
NANO = 1e-9


def at(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


@pytest.fixture
def ledger(storage: Storage) -> BudgetLedger:
    return BudgetLedger(storage.ledger, warn_thresholds=(0.8, 0.95))


async def window(ledger: BudgetLedger, now: datetime, scopes: dict, scope: str = "global", w: str = "daily"):
    return (await ledger.report(now, scopes)).scopes[scope].windows[w]


async def test_reserve_records_a_live_reservation(ledger: BudgetLedger) -> None:
    r = await ledger.reserve(GLOBAL_DAILY_1, 0.25, enforce=True, now=NOON, ttl_s=60, attrs={"component": "c"})
    assert r.over == () and r.amount_usd == 0.25
    assert r.window_keys == {"daily": "2025-03-12", "weekly": "2025-W11", "monthly": "2025-03"}
    assert r.expires_at == (NOON + timedelta(seconds=60)).isoformat()
    w = await window(ledger, NOON, GLOBAL_DAILY_1)
    assert (w.limit_usd, w.spent_usd, w.reserved_usd, w.remaining_usd) == (1.0, 0.0, 0.25, 0.75)
    row = await ledger.repo.get(r.id)
    assert row is not None and row.state == "reserved" and row.attrs["component"] == "c"


async def test_enforce_refuses_over_limit_and_records_nothing(ledger: BudgetLedger) -> None:
    await ledger.reserve(GLOBAL_DAILY_1, 0.7, enforce=True, now=NOON)
    with pytest.raises(BudgetExceededError) as info:
        await ledger.reserve(GLOBAL_DAILY_1, 0.3 + NANO, enforce=True, now=NOON)
    d = info.value.details
    assert (d["scope"], d["window"], d["window_key"]) == ("global", "daily", "2025-03-12")
    assert (d["limit_usd"], d["spent_usd"], d["reserved_usd"], d["requested_usd"]) == (1.0, 0.0, 0.7, 0.300000001)
    assert info.value.code == "budget-exceeded" and info.value.status == 402
    assert (await window(ledger, NOON, GLOBAL_DAILY_1)).reserved_usd == 0.7
    exact = await ledger.reserve(GLOBAL_DAILY_1, 0.3, enforce=True, now=NOON)  # reaching the limit exactly is allowed
    assert exact.over == ()
    assert (await window(ledger, NOON, GLOBAL_DAILY_1)).remaining_usd == 0.0


async def test_every_window_and_scope_is_checked(ledger: BudgetLedger) -> None:
    scopes = {"global": {"daily": 10, "weekly": 0, "monthly": 0}, "component:a": {"monthly": 1.0}}
    await ledger.reserve(scopes, 0.9, enforce=True, now=NOON)
    with pytest.raises(BudgetExceededError) as info:
        await ledger.reserve(scopes, 0.2, enforce=True, now=NOON)
    assert [(o["scope"], o["window"]) for o in info.value.details["over"]] == [("component:a", "monthly")]
    other = {"global": {"daily": 10}, "component:b": {"monthly": 1.0}}
    assert (await ledger.reserve(other, 0.2, enforce=True, now=NOON)).over == ()


async def test_warn_policy_records_and_reports_what_is_over(ledger: BudgetLedger) -> None:
    await ledger.reserve(GLOBAL_DAILY_1, 0.9, enforce=False, now=NOON)
    r = await ledger.reserve(GLOBAL_DAILY_1, 0.2, enforce=False, now=NOON)
    assert [(o.scope, o.window, o.limit_usd, o.reserved_usd, o.requested_usd) for o in r.over] == [
        ("global", "daily", 1.0, 0.9, 0.2)
    ]
    w = await window(ledger, NOON, GLOBAL_DAILY_1)
    assert (w.reserved_usd, w.remaining_usd) == (1.1, 0.0)


@pytest.mark.parametrize("actual", [0.1, 0.75, 0.0])
async def test_settle_replaces_the_reservation_by_the_real_cost(ledger: BudgetLedger, actual: float) -> None:
    r = await ledger.reserve(GLOBAL_DAILY_1, 0.5, enforce=True, now=NOON)
    s = await ledger.settle(r.id, actual, Usage(100, 20), {"model": "m", "provider": "p"}, now=NOON)
    assert (s.cost_usd, s.reserved_usd, s.already_settled) == (actual, 0.5, False)
    w = await window(ledger, NOON, GLOBAL_DAILY_1)
    assert (w.spent_usd, w.reserved_usd) == (actual, 0.0)
    row = await ledger.repo.get(r.id)
    assert row is not None and row.state == "settled" and (row.input_tokens, row.output_tokens) == (100, 20)


async def test_settle_is_idempotent(ledger: BudgetLedger) -> None:
    r = await ledger.reserve(GLOBAL_DAILY_1, 0.5, enforce=True, now=NOON)
    first = await ledger.settle(r.id, 0.4, Usage(10, 10), now=NOON)
    again = await ledger.settle(r.id, 0.9, Usage(99, 99), now=NOON)
    assert again.already_settled and again.cost_usd == first.cost_usd == 0.4
    w = await window(ledger, NOON, GLOBAL_DAILY_1)
    assert (w.spent_usd, w.reserved_usd) == (0.4, 0.0)
    assert (await ledger.report(NOON, GLOBAL_DAILY_1)).usage["daily"].total.requests == 1


async def test_zero_cost_calls_count_requests_and_tokens(ledger: BudgetLedger) -> None:
    for _ in range(3):
        r = await ledger.reserve(GLOBAL_DAILY_1, 0, enforce=True, now=NOON)
        await ledger.settle(r.id, 0, Usage(7, 5), {"model": "simulated", "provider": "simulated"}, now=NOON)
    usage = (await ledger.report(NOON, GLOBAL_DAILY_1)).usage["daily"]
    assert usage.by_model["simulated"].to_dict() == {"spend_usd": 0.0, "requests": 3, "input_tokens": 21,
                                                     "output_tokens": 15}


async def test_free_calls_pass_an_exhausted_budget(ledger: BudgetLedger) -> None:
    r = await ledger.reserve(GLOBAL_DAILY_1, 1.0, enforce=True, now=NOON)
    await ledger.settle(r.id, 1.25, now=NOON)  # the real cost came out above the reservation
    with pytest.raises(BudgetExceededError):
        await ledger.reserve(GLOBAL_DAILY_1, NANO, enforce=True, now=NOON)
    free = await ledger.reserve(GLOBAL_DAILY_1, 0, enforce=True, now=NOON)  # e.g. the offline fallback
    assert free.over == ()
    assert (await window(ledger, NOON, GLOBAL_DAILY_1)).spent_usd == 1.25


async def test_release_drops_only_live_reservations(ledger: BudgetLedger) -> None:
    r = await ledger.reserve(GLOBAL_DAILY_1, 0.5, enforce=True, now=NOON)
    assert await ledger.release(r.id, now=NOON) is True
    assert await ledger.release(r.id, now=NOON) is False
    assert await ledger.release("no-such-id", now=NOON) is False
    assert (await window(ledger, NOON, GLOBAL_DAILY_1)).reserved_usd == 0.0
    with pytest.raises(ReservationStateError):
        await ledger.settle(r.id, 0.1, now=NOON)
    settled = await ledger.reserve(GLOBAL_DAILY_1, 0.5, enforce=True, now=NOON)
    await ledger.settle(settled.id, 0.2, now=NOON)
    assert await ledger.release(settled.id, now=NOON) is False  # releasing never undoes spend
    assert (await window(ledger, NOON, GLOBAL_DAILY_1)).spent_usd == 0.2
    with pytest.raises(UnknownReservationError):
        await ledger.settle("no-such-id", 0.1, now=NOON)


async def test_reconcile_expires_overdue_reservations_only(ledger: BudgetLedger) -> None:
    short = await ledger.reserve(GLOBAL_DAILY_1, 0.5, enforce=True, now=NOON, ttl_s=30)
    long = await ledger.reserve(GLOBAL_DAILY_1, 0.5, enforce=True, now=NOON, ttl_s=300)
    with pytest.raises(BudgetExceededError):
        await ledger.reserve(GLOBAL_DAILY_1, 0.1, enforce=True, now=NOON)
    assert await ledger.reconcile(NOON + timedelta(seconds=29)) == []
    assert await ledger.reconcile(NOON + timedelta(seconds=30)) == [short.id]  # expiry is inclusive
    assert await ledger.reconcile(NOON + timedelta(seconds=31)) == []
    assert (await window(ledger, NOON, GLOBAL_DAILY_1)).reserved_usd == 0.5
    await ledger.reserve(GLOBAL_DAILY_1, 0.5, enforce=True, now=NOON + timedelta(seconds=31))
    row = await ledger.repo.get(long.id)
    assert row is not None and row.state == "reserved"


async def test_settling_an_expired_reservation_still_charges_its_spend(ledger: BudgetLedger) -> None:
    r = await ledger.reserve(GLOBAL_DAILY_1, 0.5, enforce=True, now=NOON, ttl_s=10)
    assert await ledger.reconcile(NOON + timedelta(seconds=60)) == [r.id]
    s = await ledger.settle(r.id, 0.3, Usage(1, 1), now=NOON + timedelta(seconds=61))
    assert s.was_expired and not s.already_settled
    w = await window(ledger, NOON, GLOBAL_DAILY_1)
    assert (w.spent_usd, w.reserved_usd) == (0.3, 0.0)  # reserved not released twice
    assert (await ledger.settle(r.id, 0.3, now=NOON)).already_settled


async def test_thresholds_fire_once_per_scope_and_window(ledger: BudgetLedger) -> None:
    r1 = await ledger.reserve(GLOBAL_DAILY_1, 0.5, enforce=True, now=NOON)
    assert r1.crossed == ()
    r2 = await ledger.reserve(GLOBAL_DAILY_1, 0.3, enforce=True, now=NOON)  # 0.8 committed
    assert [(c.scope, c.window, c.threshold, c.committed_usd) for c in r2.crossed] == [("global", "daily", 0.8, 0.8)]
    s1 = await ledger.settle(r1.id, 0.66, now=NOON)  # 0.96 committed: 0.95 fires, 0.8 does not again
    assert [c.threshold for c in s1.crossed] == [0.95]
    s2 = await ledger.settle(r2.id, 0.3, now=NOON)
    assert s2.crossed == ()
    assert (await window(ledger, NOON, GLOBAL_DAILY_1)).thresholds_fired == [0.8, 0.95]
    tomorrow = NOON + timedelta(days=1)
    r3 = await ledger.reserve(GLOBAL_DAILY_1, 0.99, enforce=True, now=tomorrow)
    assert [c.threshold for c in r3.crossed] == [0.8, 0.95]  # a new window fires again


async def test_thresholds_ignore_windows_without_limit(ledger: BudgetLedger) -> None:
    r = await ledger.reserve({"global": {"daily": 0, "weekly": 0, "monthly": 0}}, 1000, enforce=True, now=NOON)
    assert r.crossed == () and r.over == ()


async def test_report_groups_spend_by_attribute_for_windows_and_all_time(ledger: BudgetLedger) -> None:
    scopes = {"global": {"daily": 10}, "component:a": {}}
    calls = [
        (NOON - timedelta(days=1), 1.0, "opus", "anthropic", "a", "code"),  # yesterday, same ISO week
        (NOON, 0.5, "opus", "anthropic", "a", "code"),
        (NOON, 0.25, "gpt-4o", "openai", "a", "chat"),
        (NOON, 0.125, "gpt-4o", "openai", None, "chat"),
    ]
    for now, cost, model, provider, component, task in calls:
        scoped = scopes if component else {"global": scopes["global"]}
        r = await ledger.reserve(scoped, 1, enforce=True, now=now, attrs={"component": component, "task_type": task})
        await ledger.settle(r.id, cost, Usage(10, 1), {"model": model, "provider": provider}, now=now)
    report = await ledger.report(NOON, scopes)
    day, week, ever = report.usage["daily"], report.usage["weekly"], report.usage["all_time"]
    assert day.window_key == "2025-03-12" and ever.window_key is None
    assert day.total.to_dict() == {"spend_usd": 0.875, "requests": 3, "input_tokens": 30, "output_tokens": 3}
    assert {k: v.spend_usd for k, v in day.by_model.items()} == {"gpt-4o": 0.375, "opus": 0.5}
    assert {k: v.requests for k, v in day.by_provider.items()} == {"anthropic": 1, "openai": 2}
    assert {k: v.spend_usd for k, v in day.by_component.items()} == {"a": 0.75, "unknown": 0.125}
    assert {k: v.requests for k, v in day.by_task_type.items()} == {"chat": 2, "code": 1}
    assert week.total.spend_usd == ever.total.spend_usd == 1.875
    assert report.scopes["global"].windows["daily"].spent_usd == 0.875
    assert report.scopes["component:a"].windows["weekly"].spent_usd == 1.75
    assert report.scopes["component:a"].windows["weekly"].remaining_usd is None
    assert json.loads(json.dumps(report.to_dict()))["usage"]["daily"]["by_model"]["opus"]["requests"] == 1


async def test_money_is_exact(ledger: BudgetLedger) -> None:
    scopes = {"global": {"daily": 1.0}}
    for _ in range(10):
        r = await ledger.reserve(scopes, 0.1, enforce=True, now=NOON)
        await ledger.settle(r.id, 0.1, now=NOON)
    assert (await window(ledger, NOON, scopes)).spent_usd == 1.0  # sum(0.1 for 10) == 0.9999999999999999 in floats
    with pytest.raises(BudgetExceededError):
        await ledger.reserve(scopes, NANO, enforce=True, now=NOON)


async def test_spend_is_charged_to_the_window_it_was_admitted_in(ledger: BudgetLedger) -> None:
    before = at(2025, 3, 12, 23, 59, 59)
    r = await ledger.reserve(GLOBAL_DAILY_1, 0.5, enforce=True, now=before)
    await ledger.settle(r.id, 0.6, now=before + timedelta(seconds=10))
    assert (await window(ledger, before, GLOBAL_DAILY_1)).spent_usd == 0.6
    assert (await window(ledger, before + timedelta(seconds=10), GLOBAL_DAILY_1)).spent_usd == 0.0


async def test_naive_times_are_refused(ledger: BudgetLedger) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        await ledger.reserve(GLOBAL_DAILY_1, 0.1, enforce=True, now=datetime(2025, 1, 1))  # noqa: DTZ001


async def test_other_timezones_are_converted_to_utc(ledger: BudgetLedger) -> None:
    plus2 = timezone(timedelta(hours=2))
    r = await ledger.reserve(GLOBAL_DAILY_1, 0.1, enforce=True, now=datetime(2025, 1, 1, 1, 0, tzinfo=plus2))
    assert r.window_keys == {"daily": "2024-12-31", "weekly": "2025-W01", "monthly": "2024-12"}


# ---------------------------------------------------------------- window roll-over

ALL_1 = {"global": {"daily": 1.0, "weekly": 1.0, "monthly": 1.0}}


async def exhaust(ledger: BudgetLedger, now: datetime) -> None:
    r = await ledger.reserve(ALL_1, 1.0, enforce=True, now=now)
    await ledger.settle(r.id, 1.0, now=now)


async def blocked(ledger: BudgetLedger, now: datetime, scopes: dict) -> list[str]:
    """The windows that refuse one more nano-dollar at ``now``."""
    try:
        r = await ledger.reserve(scopes, NANO, enforce=True, now=now)
    except BudgetExceededError as exc:
        return sorted(o["window"] for o in exc.details["over"])
    await ledger.release(r.id, now=now)
    return []


@pytest.mark.parametrize(
    ("last", "first", "rolled"),
    [
        # midnight UTC on a Wednesday: only the day changes
        (at(2025, 3, 12, 23, 59, 59, 999999), at(2025, 3, 13), ["daily"]),
        # Sunday → Monday: day and ISO week change, not the month
        (at(2025, 3, 16, 23, 59, 59, 999999), at(2025, 3, 17), ["daily", "weekly"]),
        # month end on a Monday night (2025-03-31): day and month change, not the week
        (at(2025, 3, 31, 23, 59, 59, 999999), at(2025, 4, 1), ["daily", "monthly"]),
        # Dec → Jan mid-week: 2024-12-31 is in ISO week 2025-W01 already
        (at(2024, 12, 31, 23, 59, 59, 999999), at(2025, 1, 1), ["daily", "monthly"]),
        # Sunday 2023-12-31 → Monday 2024-01-01: everything rolls, ISO year too
        (at(2023, 12, 31, 23, 59, 59, 999999), at(2024, 1, 1), ["daily", "monthly", "weekly"]),
    ],
)
async def test_windows_roll_over_at_utc_boundaries(
    ledger: BudgetLedger, last: datetime, first: datetime, rolled: list[str]
) -> None:
    await exhaust(ledger, last)
    assert await blocked(ledger, last, ALL_1) == ["daily", "monthly", "weekly"]
    each = {"global": {"daily": 1.0}}, {"global": {"weekly": 1.0}}, {"global": {"monthly": 1.0}}
    still_blocked = [w for scopes in each for w in await blocked(ledger, first, scopes)]
    assert sorted(still_blocked) == sorted({"daily", "weekly", "monthly"} - set(rolled))
    report = await ledger.report(first, ALL_1)
    for w in rolled:
        assert report.scopes["global"].windows[w].spent_usd == 0.0
        assert report.usage[w].total.requests == 0
    assert report.usage["all_time"].total.spend_usd == 1.0


async def over_windows(ledger: BudgetLedger, now: datetime, scopes: dict) -> list[str]:
    with pytest.raises(BudgetExceededError) as exc:
        await ledger.reserve(scopes, NANO, enforce=True, now=now)
    return sorted(o["window"] for o in exc.value.details["over"])


async def test_limits_from_budgets_yaml_apply_to_the_windows_of_each_reservations_day(ledger: BudgetLedger) -> None:
    """budgets.yaml's limits (``BudgetLimitsSpec``) take the ledger's fast path, which prepares a scope set's buckets
    once per day: a new day, a clock that goes back and changed limits must each still get their own buckets."""
    spec = {"global": BudgetLimitsSpec(daily=1.0, weekly=1.0, monthly=1.0)}
    sunday, monday = at(2025, 3, 16, 23, 59, 59, 999999), at(2025, 3, 17)
    r = await ledger.reserve(spec, 1.0, enforce=True, now=sunday)
    await ledger.settle(r.id, 1.0, now=sunday)
    assert await over_windows(ledger, sunday, spec) == ["daily", "monthly", "weekly"]
    assert await over_windows(ledger, monday, spec) == ["monthly"]  # a new day and ISO week
    assert await over_windows(ledger, sunday, spec) == ["daily", "monthly", "weekly"]  # the clock went back
    raised = {"global": BudgetLimitsSpec(daily=2.0, weekly=2.0, monthly=1.0)}  # budgets.yaml reloaded
    assert await over_windows(ledger, sunday, raised) == ["monthly"]
    r = await ledger.reserve({"global": BudgetLimitsSpec(daily=2.0, weekly=2.0, monthly=2.0)}, 0.5, enforce=True,
                             now=sunday)
    row = await ledger.repo.get(r.id)
    assert row is not None
    assert sorted((b.bucket.window, b.bucket.key, b.limit_nanos) for b in row.buckets) == [
        ("daily", "2025-03-16", 2_000_000_000), ("monthly", "2025-03", 2_000_000_000),
        ("weekly", "2025-W11", 2_000_000_000)]


async def test_iso_week_key_uses_the_iso_year(ledger: BudgetLedger) -> None:
    r = await ledger.reserve(ALL_1, 0.1, enforce=True, now=at(2024, 12, 30, 0, 0))  # Monday of 2025-W01
    assert r.window_keys == {"daily": "2024-12-30", "weekly": "2025-W01", "monthly": "2024-12"}
    r = await ledger.reserve(ALL_1, 0.1, enforce=True, now=at(2021, 1, 3, 12))  # Sunday of 2020-W53
    assert r.window_keys["weekly"] == "2020-W53"
