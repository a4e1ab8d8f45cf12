"""Per-engine runtime state shared by requests: the clock, circuit breakers and the jitter source.

It lives on the ``Engine`` (never in a module global) and reaches stages through ``BuildContext``.
Tests swap in ``FakeClock`` so backoff and cool-downs are measured, not slept.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

from rhetor.tokens import Tokenizers

__all__ = ["CircuitBreakers", "Clock", "FakeClock", "MonotonicClock", "Runtime"]


class Clock(Protocol):
    def now(self) -> float:
        """Seconds on a monotonic scale."""

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` (a fake clock advances instead)."""


class MonotonicClock:
    def now(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class FakeClock:
    """A clock that only moves when slept on or advanced: backoff in tests costs no real time."""

    def __init__(self, start: float = 1000.0) -> None:
        self.t = start
        self.sleeps: list[float] = []

    def now(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(round(seconds, 6))
        self.t += seconds
        await asyncio.sleep(0)


@dataclass
class _Circuit:
    failures: int = 0
    opened_at: float | None = None
    trial_running: bool = False


@dataclass
class CircuitBreakers:
    """Per model: after ``threshold`` consecutive failures the circuit opens for ``cooldown_s``, then
    lets one trial request through (half-open); its success closes the circuit, its failure reopens it.
    """

    clock: Clock
    threshold: int = 5
    cooldown_s: float = 30.0
    _circuits: dict[str, _Circuit] = field(default_factory=dict)

    def state(self, model: str) -> str:
        c = self._circuits.get(model)
        if c is None or c.opened_at is None:
            return "closed"
        if self.clock.now() - c.opened_at < self.cooldown_s:
            return "open"
        return "half-open"

    def allow(self, model: str) -> bool:
        """Whether a request may go to ``model`` now; claims the single half-open trial."""
        state = self.state(model)
        if state == "closed":
            return True
        if state == "open":
            return False
        c = self._circuits[model]
        if c.trial_running:
            return False
        c.trial_running = True
        return True

    def release(self, model: str) -> None:
        """Give back a half-open trial that ended without a verdict (e.g. the request was cancelled)."""
        c = self._circuits.get(model)
        if c is not None:
            c.trial_running = False

    def success(self, model: str) -> None:
        self._circuits.pop(model, None)

    def failure(self, model: str) -> str:
        """Record a failure; returns the state after it."""
        c = self._circuits.setdefault(model, _Circuit())
        c.failures += 1
        if c.trial_running or c.failures >= self.threshold:
            c.opened_at = self.clock.now()
            c.trial_running = False
        return self.state(model)

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """State of every model that has failed recently (for /health and /providers)."""
        out = {}
        for model, c in self._circuits.items():
            state = self.state(model)
            entry: dict[str, Any] = {"state": state, "consecutive_failures": c.failures}
            if state == "open" and c.opened_at is not None:
                entry["retry_in_s"] = round(self.cooldown_s - (self.clock.now() - c.opened_at), 3)
            out[model] = entry
        return out


@dataclass
class Runtime:
    clock: Clock
    circuits: CircuitBreakers
    rng: random.Random
    tokenizers: Tokenizers = field(default_factory=Tokenizers)

    @classmethod
    def create(cls, clock: Clock | None = None, *, seed: int | None = None, threshold: int = 5,
               cooldown_s: float = 30.0) -> Runtime:
        clock = clock or MonotonicClock()
        return cls(clock=clock, circuits=CircuitBreakers(clock, threshold, cooldown_s), rng=random.Random(seed))
