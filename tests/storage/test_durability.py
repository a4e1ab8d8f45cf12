"""Durable backends keep reservations and spend across a restart (close and reopen the storage)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from rhetor.budget import BudgetLedger
from rhetor.storage import Storage
from rhetor.types import Usage

NOW = datetime(2026, 7, 1, 9, 30, tzinfo=UTC)
SCOPES = {"global": {"daily": 2.0}, "component:x": {"weekly": 5.0}}


async def test_spend_and_reservations_survive_a_restart(make_durable_storage: Callable[[], Storage]) -> None:
    async with make_durable_storage() as first:
        ledger = BudgetLedger(first.ledger)
        done = await ledger.reserve(SCOPES, 0.5, enforce=True, now=NOW, ttl_s=120)
        await ledger.settle(done.id, 0.4, Usage(12, 34), {"model": "m", "provider": "p", "component": "x"}, now=NOW)
        pending = await ledger.reserve(SCOPES, 1.5, enforce=True, now=NOW, ttl_s=120)

    async with make_durable_storage() as second:
        ledger = BudgetLedger(second.ledger)
        day = (await ledger.report(NOW, SCOPES)).scopes["global"].windows["daily"]
        assert (day.spent_usd, day.reserved_usd) == (0.4, 1.5)
        row = await second.ledger.get(done.id)
        assert row is not None and row.state == "settled" and row.cost_nanos == 400_000_000
        assert (row.input_tokens, row.output_tokens, row.attrs["model"]) == (12, 34, "m")
        assert await ledger.reconcile(NOW + timedelta(seconds=120)) == [pending.id]
        report = await ledger.report(NOW, SCOPES)
        assert report.scopes["global"].windows["daily"].reserved_usd == 0.0
        assert report.scopes["component:x"].windows["weekly"].spent_usd == 0.4
        assert report.usage["all_time"].by_component["x"].input_tokens == 12
