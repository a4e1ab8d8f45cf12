"""Property: whatever the chain, retries, deadline and faults, a request terminates and never makes more
provider calls than the bound `rhetor validate` prints (len(chain) × (retries + 1))."""

from __future__ import annotations

import asyncio
import functools
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from rhetor.config.loader import LoadedConfig, load_config_files
from rhetor.engine.runtime import FakeClock, Runtime
from rhetor.errors import (
    AuthenticationError,
    BadRequestError,
    ContextTooLongError,
    OverloadedError,
    ProviderConnectionError,
    ProviderTimeoutError,
    RateLimitError,
    RhetorError,
)
from rhetor.stages._fallback import BackoffConfig, GenerateConfig, chain_bounds
from rhetor.stages.base import BuildContext, Request, RunContext
from rhetor.stages.generate import GenerateStage
from rhetor.types import Completion, Messages, ModelChain, RequestOptions
from tests.fakes.scripted import ScriptedProvider

CONFIG = Path(__file__).resolve().parents[1] / "fixtures" / "configs" / "fallback"
MODELS = ["a", "b", "big"]


@functools.cache
def loaded() -> LoadedConfig:
    config, diags = load_config_files(CONFIG, env={})
    assert config is not None, diags
    return config


def fault(kind: str, retry_after: float):  # type: ignore[no-untyped-def]
    return {
        "ok": "ok",
        "cut": ("cut", 1),
        "overloaded": OverloadedError("x", provider="up", upstream_status=503),
        "rate": RateLimitError("x", retry_after=retry_after, provider="up", upstream_status=429),
        "rate-no-header": RateLimitError("x", provider="up", upstream_status=429),
        "timeout": ProviderTimeoutError("x", provider="up"),
        "connection": ProviderConnectionError("x", provider="up"),
        "auth": AuthenticationError("x", provider="up", upstream_status=401),
        "bad": BadRequestError("x", provider="up", upstream_status=400),
        "too-long": ContextTooLongError("x", provider="up", upstream_status=400),
    }[kind]


outcomes = st.builds(fault, st.sampled_from(["ok", "cut", "overloaded", "rate", "rate-no-header", "timeout",
                                             "connection", "auth", "bad", "too-long"]),
                     st.floats(0, 90))


@settings(max_examples=300, deadline=None)
@given(
    chain=st.lists(st.sampled_from(MODELS), min_size=1, max_size=3, unique=True),
    retries=st.integers(0, 4),
    deadline=st.one_of(st.none(), st.floats(0.5, 300)),
    threshold=st.integers(1, 6),
    script=st.dictionaries(st.sampled_from(MODELS), st.lists(outcomes, max_size=8)),
    stream=st.booleans(),
    jitter=st.floats(0, 1),
)
def test_attempts_are_bounded_and_every_request_terminates(
    chain: list[str], retries: int, deadline: float | None, threshold: int,
    script: dict[str, list[object]], stream: bool, jitter: float,
) -> None:
    config = loaded()
    clock = FakeClock()
    runtime = Runtime.create(clock, seed=1, threshold=threshold, cooldown_s=10)
    provider = ScriptedProvider("up", config.providers.providers["up"], {}, {k: list(v) for k, v in script.items()})
    provider.clock = clock
    build = BuildContext(config=config, providers={"up": provider}, pipeline="default", runtime=runtime)
    settings_ = GenerateConfig(retries=retries, deadline_s=deadline,
                               backoff=BackoffConfig(initial_s=0.5, multiplier=3, max_s=20, jitter=jitter))
    stage = GenerateStage("generate", settings_, build)
    request = Request.from_text("hi", RequestOptions(stream=stream))
    ctx = RunContext(request, emit=(lambda _: None) if stream else None)
    inputs = {"chain": ModelChain(tuple(chain)), "messages": Messages(request.messages), "options": request.options}

    async def go() -> object:
        try:
            return await stage.run(ctx, inputs)
        except RhetorError as exc:  # every way a request may end is a RhetorError
            return exc

    outcome = asyncio.run(asyncio.wait_for(go(), timeout=10))  # terminates (fake time: no real waits)
    bound = chain_bounds(settings_, config.providers, chain).attempts
    assert bound == len(chain) * (retries + 1)
    assert len(provider.calls) <= bound
    models_called = [m for m, _ in provider.calls]
    for i, model in enumerate(chain):  # the walk never returns to a target it left
        later = chain[i + 1:]
        if model in models_called and any(m in models_called for m in later):
            last_of_model = max(j for j, m in enumerate(models_called) if m == model)
            first_later = min(j for j, m in enumerate(models_called) if m in later)
            assert last_of_model < first_later
    if deadline is not None:
        assert clock.now() - 1000.0 <= deadline + 1e-9  # waits never run past the deadline
    if not isinstance(outcome, RhetorError):
        assert isinstance(outcome.outputs["completion"], Completion)  # type: ignore[attr-defined]
