"""Fallback policy of the ``generate`` stage: its config, backoff delays and the worst-case bounds.

Kept apart from the stage so the bound the validator prints and the loop the stage runs read the
same numbers: ``max_attempts(chain) = len(chain) × (retries + 1)``.
"""

from __future__ import annotations

import random
from typing import Literal

from pydantic import Field

from rhetor.config.models import ProvidersFileSpec
from rhetor.stages.base import Bounds, StageConfig
from rhetor.types import Usage, cost_of

__all__ = ["BackoffConfig", "FallbackCode", "GenerateConfig", "backoff_delay", "chain_bounds"]

FallbackCode = Literal[
    "provider-unavailable", "provider-auth", "provider-bad-request", "context-too-long", "rate-limited",
    "provider-overloaded", "provider-timeout", "provider-connection",
]
DEFAULT_FALLBACK_ON: list[FallbackCode] = [
    "provider-unavailable", "provider-auth", "context-too-long", "rate-limited", "provider-overloaded",
    "provider-timeout", "provider-connection",
]


class BackoffConfig(StageConfig):
    initial_s: float = Field(0.5, ge=0)
    """Delay before the first retry of a target."""
    multiplier: float = Field(2.0, ge=1)
    max_s: float = Field(8.0, ge=0)
    """No single backoff delay is longer than this (a Retry-After may be, up to `retry_after_max_s`)."""
    jitter: float = Field(0.2, ge=0, le=1)
    """Each delay is shortened by a random fraction up to this, so retries of many requests spread out."""


class GenerateConfig(StageConfig):
    retries: int = Field(0, ge=0, le=5)
    """Retries of one target on retryable errors (rate limit, overload, timeout, connection) before the next."""
    backoff: BackoffConfig = BackoffConfig()
    retry_after_max_s: float = Field(30.0, ge=0)
    """A Retry-After up to this is honoured; a longer one moves on to the next target at once."""
    fallback_on: list[FallbackCode] = Field(default_factory=lambda: list(DEFAULT_FALLBACK_ON))
    """Error codes that move on to the next target; any other error ends the request with it."""
    deadline_s: float | None = Field(None, gt=0)
    """Seconds the whole chain may take; unset means the worst case of its attempts and waits."""
    max_tokens: int | None = Field(None, gt=0)
    """Cap on output tokens for every target (the request's own `max_tokens` may lower it)."""


def backoff_delay(config: GenerateConfig, retry: int, rng: random.Random) -> float:
    """Delay before retry number ``retry`` (0-based): exponential, capped, with jitter."""
    b = config.backoff
    base = min(b.max_s, b.initial_s * (b.multiplier ** retry))
    return base * (1 - b.jitter * rng.random())


def chain_bounds(config: GenerateConfig, specs: ProvidersFileSpec, chain: list[str]) -> Bounds:
    """Worst case of one chain: every target failing retryably after its full timeout, every wait maximal."""
    tries = config.retries + 1
    waits = sum(max(min(config.backoff.max_s, config.backoff.initial_s * config.backoff.multiplier ** k),
                    config.retry_after_max_s) for k in range(config.retries))
    latency = cost = 0.0
    attempts = 0
    for name in chain:
        model = specs.models.get(name)
        provider = specs.providers.get(model.provider) if model else None
        if model is None or provider is None:
            continue
        attempts += tries
        latency += tries * provider.timeouts.total + waits
        out = min(config.max_tokens or model.max_output_tokens, model.max_output_tokens)
        if model.price is not None:
            per_attempt = cost_of(Usage(input_tokens=max(0, model.context_window - out), output_tokens=out),
                                  model.price)
            cost += tries * per_attempt
    if config.deadline_s is not None:
        latency = min(latency, config.deadline_s)
    return Bounds(attempts, round(latency, 6), round(cost, 6))
