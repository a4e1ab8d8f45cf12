"""Budget ledger: exact, atomic reservations and spend per scope (global, component:<name>) and window.

    ledger = BudgetLedger.from_config(storage.ledger, budgets)
    r = await ledger.reserve(scopes_for(budgets, component), estimate_usd, enforce=True, now=now)
    ...call the provider...
    await ledger.settle(r.id, completion.cost_usd, completion.usage, {"model": ..., "provider": ...}, now=now)
    # or, when the call produced no spend: await ledger.release(r.id, now=now)
    # periodically: await ledger.reconcile(now)
"""

from rhetor.budget.ledger import BudgetLedger
from rhetor.budget.money import NANOS_PER_USD, to_decimal, to_nanos, to_usd
from rhetor.budget.scopes import GLOBAL, ScopeLimits, component_scope, policy_for, scopes_for
from rhetor.budget.values import (
    BudgetReport,
    OverLimit,
    Reservation,
    ScopeReport,
    Settlement,
    ThresholdCrossed,
    UsageBreakdown,
    UsageStats,
    WindowReport,
)
from rhetor.budget.windows import WINDOWS, window_bounds, window_key, window_keys

__all__ = [
    "GLOBAL",
    "NANOS_PER_USD",
    "WINDOWS",
    "BudgetLedger",
    "BudgetReport",
    "OverLimit",
    "Reservation",
    "ScopeLimits",
    "ScopeReport",
    "Settlement",
    "ThresholdCrossed",
    "UsageBreakdown",
    "UsageStats",
    "WindowReport",
    "component_scope",
    "policy_for",
    "scopes_for",
    "to_decimal",
    "to_nanos",
    "to_usd",
    "window_bounds",
    "window_key",
    "window_keys",
]
