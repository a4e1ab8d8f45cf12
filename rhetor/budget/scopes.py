"""Budget scopes: ``global`` and ``component:<name>``, each with a limit per window (0 = no limit)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rhetor.budget.money import to_nanos
from rhetor.budget.windows import WINDOWS
from rhetor.config.models import BudgetLimitsSpec, BudgetsFileSpec

__all__ = ["GLOBAL", "ScopeLimits", "component_scope", "limits_nanos", "policy_for", "scopes_for", "validate_scope"]

GLOBAL = "global"

ScopeLimits = Mapping[str, BudgetLimitsSpec | Mapping[str, Any]]
"""Scope → its limits: a ``BudgetLimitsSpec`` or a mapping ``{"daily": 5, "weekly": 0, ...}`` in USD."""


def component_scope(name: str) -> str:
    return f"component:{name}"


def validate_scope(scope: str) -> str:
    if scope == GLOBAL or (scope.startswith("component:") and len(scope) > len("component:")):
        return scope
    raise ValueError(f"unknown budget scope {scope!r} (expected 'global' or 'component:<name>')")


def limits_nanos(limits: BudgetLimitsSpec | Mapping[str, Any]) -> dict[str, int]:
    """Window → limit in nano-dollars (0 = no limit); windows left out have no limit."""
    values = limits.model_dump() if isinstance(limits, BudgetLimitsSpec) else dict(limits)
    unknown = set(values) - set(WINDOWS)
    if unknown:
        raise ValueError(f"unknown budget window(s) {sorted(unknown)} (expected {', '.join(WINDOWS)})")
    return {w: to_nanos(values.get(w) or 0, what=f"{w} limit") for w in WINDOWS}


def scopes_for(budgets: BudgetsFileSpec, component: str | None) -> dict[str, BudgetLimitsSpec]:
    """The scopes a request of ``component`` counts against, with their configured limits.

    Always ``global``; plus ``component:<name>`` when the request names a component (with no limit when
    budgets.yaml does not configure it, so its spend is still tracked and reported).
    """
    scopes = {GLOBAL: budgets.limits}
    if component:
        spec = budgets.components.get(component)
        scopes[component_scope(component)] = spec.limits if spec is not None else BudgetLimitsSpec()
    return scopes


def policy_for(budgets: BudgetsFileSpec, component: str | None) -> str:
    """The budget policy in force for ``component``: its own override, else the global one."""
    spec = budgets.components.get(component) if component else None
    return spec.policy if spec is not None and spec.policy is not None else budgets.policy
