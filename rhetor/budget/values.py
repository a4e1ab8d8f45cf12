"""What the ledger returns: frozen dataclasses of plain values; ``to_dict()`` gives JSON-ready dicts.

Amounts are USD floats converted once from the exact nano-dollar integers the ledger stores.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = [
    "BudgetReport",
    "OverLimit",
    "Reservation",
    "ScopeReport",
    "Settlement",
    "ThresholdCrossed",
    "UsageBreakdown",
    "UsageStats",
    "WindowReport",
]


class _Dict:
    __slots__ = ()

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)  # type: ignore[call-overload, no-any-return]


@dataclass(frozen=True, slots=True)
class OverLimit(_Dict):
    """A scope's window whose limit a reservation exceeds (amounts before the reservation)."""

    scope: str
    window: str
    window_key: str
    limit_usd: float
    spent_usd: float
    reserved_usd: float
    requested_usd: float


@dataclass(frozen=True, slots=True)
class ThresholdCrossed(_Dict):
    """A warn threshold reached for the first time in a scope's window (fires once per window)."""

    scope: str
    window: str
    window_key: str
    threshold: float
    limit_usd: float
    committed_usd: float
    """Spent + reserved when it fired."""


@dataclass(frozen=True, slots=True)
class Reservation(_Dict):
    id: str
    amount_usd: float
    created_at: str
    expires_at: str
    window_keys: dict[str, str]
    over: tuple[OverLimit, ...] = ()
    """Limits this reservation exceeds (only ever non-empty when not enforcing: warn policy)."""
    crossed: tuple[ThresholdCrossed, ...] = ()


@dataclass(frozen=True, slots=True)
class Settlement(_Dict):
    reservation_id: str
    cost_usd: float
    reserved_usd: float
    already_settled: bool = False
    """True when this call repeated an earlier settle: nothing was charged again."""
    was_expired: bool = False
    """The reservation had expired before settling; its spend was charged all the same."""
    crossed: tuple[ThresholdCrossed, ...] = ()


@dataclass(frozen=True, slots=True)
class WindowReport(_Dict):
    window: str
    key: str
    start: str
    end: str
    limit_usd: float
    """0 means no limit."""
    spent_usd: float
    reserved_usd: float
    remaining_usd: float | None
    """Limit − spent − reserved, never below 0; ``None`` without a limit."""
    thresholds_fired: list[float] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class ScopeReport(_Dict):
    scope: str
    windows: dict[str, WindowReport]


@dataclass(frozen=True, slots=True)
class UsageStats(_Dict):
    spend_usd: float = 0.0
    requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0


@dataclass(frozen=True, slots=True)
class UsageBreakdown(_Dict):
    """Settled spend in one window (or all time), in total and grouped by each attribute."""

    window_key: str | None
    total: UsageStats
    by_model: dict[str, UsageStats]
    by_provider: dict[str, UsageStats]
    by_component: dict[str, UsageStats]
    by_task_type: dict[str, UsageStats]


@dataclass(frozen=True, slots=True)
class BudgetReport(_Dict):
    """Backs ``GET /budget``: limits and balances per scope and window, and usage per window and all time."""

    generated_at: str
    scopes: dict[str, ScopeReport]
    usage: dict[str, UsageBreakdown]
    """Keys ``daily``, ``weekly``, ``monthly`` (current windows) and ``all_time``."""
