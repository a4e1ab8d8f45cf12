"""What the ledger does to stay cheap per request (ids that sort by time, buckets prepared once per day and
scope set) keeps every reservation exact."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime

from rhetor.budget import BudgetLedger
from rhetor.budget.ledger import time_ordered_id
from rhetor.config.models import BudgetLimitsSpec
from rhetor.errors import BudgetExceededError
from rhetor.storage.memory import MemoryStorage

NOON = datetime(2025, 3, 12, 12, 0, tzinfo=UTC)


def test_reservation_ids_are_unique_and_sort_by_the_time_they_were_made() -> None:
    burst = [time_ordered_id() for _ in range(20_000)]  # many within one millisecond
    assert len(set(burst)) == len(burst)
    assert all(re.fullmatch(r"[0-9a-f]{32}", i) for i in burst[:100])
    time.sleep(0.002)
    later = time_ordered_id()
    assert later > max(burst)


async def test_a_ledger_serving_many_components_charges_each_its_own_buckets() -> None:
    """More scope sets than the ledger keeps prepared: each reservation still lands in its component's buckets
    with its own limits, before and after the prepared sets are dropped."""
    storage = MemoryStorage()
    await storage.start()
    ledger = BudgetLedger(storage.ledger)
    names = [f"c{i}" for i in range(1_500)]
    for n, name in enumerate(names):
        limits = {"global": BudgetLimitsSpec(daily=1000.0),
                  f"component:{name}": BudgetLimitsSpec(daily=1.0 + n / 1000)}
        r = await ledger.reserve(limits, 0.25, enforce=True, now=NOON)
        await ledger.settle(r.id, 0.25, now=NOON)
    first = {"global": BudgetLimitsSpec(daily=1000.0), "component:c0": BudgetLimitsSpec(daily=1.0)}
    for _ in range(3):
        r = await ledger.reserve(first, 0.25, enforce=True, now=NOON)
        await ledger.settle(r.id, 0.25, now=NOON)
    try:
        await ledger.reserve(first, 0.25, enforce=True, now=NOON)
    except BudgetExceededError as exc:
        assert exc.details["scope"] == "component:c0"
        assert exc.details["spent_usd"] == 1.0
        assert exc.details["limit_usd"] == 1.0
    else:
        raise AssertionError("component c0 spent its whole daily limit: the next reservation must be refused")
    report = await ledger.report(NOON, {"global": BudgetLimitsSpec(daily=1000.0),
                                        "component:c1499": BudgetLimitsSpec(daily=2.499)})
    assert report.scopes["global"].windows["daily"].spent_usd == 0.25 * 1_503
    assert report.scopes["component:c1499"].windows["daily"].spent_usd == 0.25
    assert report.scopes["component:c1499"].windows["daily"].limit_usd == 2.499
    await storage.close()
