"""Exact money: the ledger counts integer nano-dollars (1e-9 USD), so sums never drift.

A price per million tokens with up to three decimals (e.g. $0.075) is a whole number of nano-dollars per
token, so per-call costs of real price lists are exact; anything finer is rounded half-even, once.
"""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation

__all__ = ["NANOS_PER_USD", "Amount", "to_decimal", "to_nanos", "to_usd"]

NANOS_PER_USD = 1_000_000_000

Amount = Decimal | float | int | str


def to_nanos(amount: Amount, *, what: str = "amount") -> int:
    """``amount`` USD as integer nano-dollars (floats via their shortest repr: 0.1 → 100_000_000).

    Raises:
        ValueError: ``amount`` is negative, not finite or not a number.
    """
    if isinstance(amount, bool):
        raise ValueError(f"{what} must be a number of USD, not {amount!r}")
    try:
        value = Decimal(repr(amount)) if isinstance(amount, float) else Decimal(amount)
    except (InvalidOperation, TypeError, ValueError):
        raise ValueError(f"{what} must be a number of USD, not {amount!r}") from None
    if not value.is_finite() or value < 0:
        raise ValueError(f"{what} must be a finite, non-negative number of USD, not {amount!r}")
    return int((value * NANOS_PER_USD).to_integral_value(rounding=ROUND_HALF_EVEN))


def to_usd(nanos: int) -> float:
    """Nano-dollars as a float of USD, for display and JSON (the nearest float to the exact value)."""
    return nanos / NANOS_PER_USD


def to_decimal(nanos: int) -> Decimal:
    """Nano-dollars as an exact ``Decimal`` of USD."""
    return Decimal(nanos).scaleb(-9)
