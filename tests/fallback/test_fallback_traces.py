"""Fallback semantics, scenario by scenario: traces pinned by snapshots, waits measured on a fake clock.

Config: tests/fixtures/configs/fallback — chain [a, b, big] (windows 1000, 1000, 100000), retries 2,
backoff 1 s ×2 (no jitter), Retry-After honoured up to 30 s, deadline 100 s, circuits open after
3 consecutive failures for 10 s.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from rhetor.engine.engine import Engine, build_engine
from rhetor.engine.runtime import FakeClock
from rhetor.errors import (
    AllTargetsFailedError,
    AuthenticationError,
    BadRequestError,
    ContextTooLongError,
    MidStreamError,
    OverloadedError,
    ProviderConnectionError,
    RateLimitError,
)
from rhetor.stages.base import Request
from rhetor.types import RequestOptions
from tests.fakes.scripted import ScriptedProvider, scripted_factory

CONFIG = Path(__file__).resolve().parents[1] / "fixtures" / "configs" / "fallback"


class Harness:
    def __init__(self, script: dict[str, list[Any]]) -> None:
        self.clock = FakeClock()
        self.providers: dict[str, ScriptedProvider] = {}
        self.engine: Engine = build_engine(CONFIG, env={}, clock=self.clock, seed=0,
                                           provider_factory=scripted_factory(script, self.providers))

    @property
    def calls(self) -> list[str]:
        return [model for model, _ in self.providers["up"].calls]

    async def run(self, text: str = "hello", **options: Any):
        return await self.engine.run(Request.from_text(text, RequestOptions(**options)))

    async def stream(self, text: str = "hello") -> tuple[list[str], Any]:
        chunks: list[str] = []
        async for item in self.engine.stream(Request.from_text(text, RequestOptions(stream=True))):
            if isinstance(item, str):
                chunks.append(item)
            else:
                return chunks, item
        raise AssertionError("no result")


def record(result_or_error: Any, h: Harness) -> dict[str, Any]:
    trace = getattr(result_or_error, "trace", ())
    return {"trace": [t.to_dict(timings=False) for t in trace], "calls": h.calls, "sleeps": h.clock.sleeps,
            "circuits": h.engine.runtime.circuits.snapshot()}


def overloaded(model: str) -> OverloadedError:
    return OverloadedError("overloaded", provider="up", model=model, upstream_status=529)


async def test_primary_success(snapshot) -> None:
    h = Harness({})
    result = await h.run()
    assert result.completion.model == "a" and h.calls == ["a"]
    assert record(result, h) == snapshot


async def test_retry_then_success(snapshot) -> None:
    h = Harness({"a": [overloaded("a"), overloaded("a")]})
    result = await h.run()
    assert result.completion.model == "a"
    assert h.calls == ["a", "a", "a"]
    assert h.clock.sleeps == [1.0, 2.0]  # exponential backoff, no jitter in this config
    assert record(result, h) == snapshot


async def test_retry_after_is_honoured(snapshot) -> None:
    h = Harness({"a": [RateLimitError("slow down", retry_after=7.5, provider="up", model="a", upstream_status=429)]})
    result = await h.run()
    assert result.completion.model == "a"
    assert h.clock.sleeps == [7.5]  # Retry-After (7.5 s) beats the 1 s backoff
    assert record(result, h) == snapshot


async def test_retry_after_beyond_the_cap_moves_on_at_once(snapshot) -> None:
    h = Harness({"a": [RateLimitError("come back later", retry_after=120, provider="up", model="a",
                                      upstream_status=429)]})
    result = await h.run()
    assert result.completion.model == "b"
    assert h.clock.sleeps == []
    assert record(result, h) == snapshot


async def test_auth_error_skips_to_the_next_target_without_retrying(snapshot) -> None:
    h = Harness({"a": [AuthenticationError("bad key", provider="up", model="a", upstream_status=401)]})
    result = await h.run()
    assert result.completion.model == "b"
    assert h.calls == ["a", "b"]
    assert record(result, h) == snapshot


async def test_bad_request_stops_the_chain(snapshot) -> None:
    h = Harness({"a": [BadRequestError("invalid temperature", provider="up", model="a", upstream_status=400)]})
    with pytest.raises(BadRequestError) as info:
        await h.run()
    assert h.calls == ["a"]
    assert info.value.details["attempts"][0]["code"] == "provider-bad-request"
    assert record(info.value, h) == snapshot


async def test_all_targets_failing_lists_every_attempt(snapshot) -> None:
    h = Harness({m: [overloaded(m)] * 3 for m in ("a", "b", "big")})
    with pytest.raises(AllTargetsFailedError) as info:
        await h.run()
    attempts = info.value.attempts
    # Each target: its first try and 2 retries (1 s, then 2 s of backoff); its third failure opens its circuit.
    assert [(x["model"], x.get("retry", 0)) for x in attempts] == [
        (m, r) for m in ("a", "b", "big") for r in (0, 1, 2)]
    assert {x["code"] for x in attempts} == {"provider-overloaded"}
    assert [x.get("circuit") for x in attempts[:3]] == [None, None, "open"]
    assert h.clock.sleeps == [1.0, 2.0] * 3
    assert len(h.calls) == 9  # = len(chain) × (retries + 1), the validator's bound
    assert record(info.value, h) == snapshot


async def test_context_too_long_moves_to_a_larger_window(snapshot) -> None:
    h = Harness({"a": [ContextTooLongError("prompt is too long", provider="up", model="a", upstream_status=400)]})
    result = await h.run()
    assert result.completion.model == "big"
    assert h.calls == ["a", "big"]  # b has the same 1000-token window as a: skipped, not called
    assert [(x.model, x.code, x.skipped) for x in result.completion.attempts] == [
        ("a", "context-too-long", False), ("b", "window-too-small", True), ("big", "ok", False)]
    assert record(result, h) == snapshot


async def test_failure_before_the_first_chunk_falls_over_silently(snapshot) -> None:
    h = Harness({"a": [overloaded("a")] * 3})
    chunks, result = await h.stream()
    assert "".join(chunks) == "answer from b" == result.completion.text
    assert result.completion.model == "b"
    assert record(result, h) == snapshot


async def test_mid_stream_failure_is_an_error_with_what_was_sent(snapshot) -> None:
    h = Harness({"a": [("cut", 2)]})
    chunks: list[str] = []
    with pytest.raises(MidStreamError) as info:
        async for item in h.engine.stream(Request.from_text("hello", RequestOptions(stream=True))):
            chunks.append(item)  # type: ignore[arg-type]
    assert chunks == ["answer", " from"]
    assert info.value.partial_text == "answer from"
    assert info.value.details["cost_usd"] == pytest.approx((100 * 1 + 2 * 2) / 1e6)
    assert h.calls == ["a"]  # committed at the first chunk: no fallback after output was sent
    assert record(info.value, h) == snapshot


async def test_circuit_opens_skips_then_half_opens_and_closes(snapshot) -> None:
    h = Harness({"a": [overloaded("a")] * 3})
    first = await h.run()  # a fails three times → circuit opens → b answers
    assert first.completion.model == "b"
    assert h.engine.runtime.circuits.state("a") == "open"
    second = await h.run()  # a is dropped by the router while open
    assert second.completion.model == "b"
    assert second.explanation is not None
    assert {"reason": "circuit-open", "model": "a", "dropped": True} in second.explanation.reasons
    h.clock.advance(10)  # cool-down over: half-open, one trial goes through and succeeds
    assert h.engine.runtime.circuits.state("a") == "half-open"
    third = await h.run()
    assert third.completion.model == "a"
    assert h.engine.runtime.circuits.state("a") == "closed"
    assert h.calls == ["a", "a", "a", "b", "b", "a"]
    assert [record(r, h)["trace"] for r in (first, second, third)] == snapshot


async def test_failed_half_open_trial_reopens_the_circuit() -> None:
    h = Harness({"a": [overloaded("a")] * 4})
    await h.run()
    h.clock.advance(10)
    result = await h.run()  # the trial fails: open again at once, no retry of a, b answers
    assert result.completion.model == "b"
    assert h.engine.runtime.circuits.state("a") == "open"
    assert h.calls == ["a", "a", "a", "b", "a", "b"]


async def test_deadline_bounds_the_walk_waits_included() -> None:
    script = {m: [RateLimitError("wait", retry_after=30, provider="up", model=m, upstream_status=429)] * 3
              for m in ("a", "b", "big")}
    h = Harness(script)
    with pytest.raises(AllTargetsFailedError) as info:
        await h.run()
    # a: fail, 30 s, fail, 30 s, fail (circuit opens); b: fail, 30 s, fail — another 30 s would pass the
    # 100 s deadline, so b's turn ends; big: one try at 90 s, and its wait would pass the deadline too.
    assert h.clock.sleeps == [30.0, 30.0, 30.0]
    assert [(a["model"], a.get("retry", 0)) for a in info.value.attempts] == [
        ("a", 0), ("a", 1), ("a", 2), ("b", 0), ("b", 1), ("big", 0)]


async def test_connection_failure_through_every_retry_marks_the_provider_unreachable() -> None:
    h = Harness({"a": [ProviderConnectionError("connection refused", provider="up", model="a")] * 3})
    with pytest.raises(AllTargetsFailedError) as info:
        await h.run()
    # a failed to connect on every try: its provider (shared by b and big here) is reported unreachable,
    # so b and big are skipped without a call instead of failing the same way.
    assert h.calls == ["a", "a", "a"]
    assert [(a["model"], a["code"], a.get("skipped", False)) for a in info.value.attempts][3:] == [
        ("b", "provider-unavailable", True), ("big", "provider-unavailable", True)]
    availability = h.providers["up"].availability()
    assert not availability.available and availability.reason == "unreachable: connection refused"
    h.clock.advance(h.providers["up"].unreachable_cooldown_s)
    assert h.providers["up"].availability().available


async def test_a_single_connection_blip_does_not_sideline_the_provider() -> None:
    h = Harness({"a": [ProviderConnectionError("reset", provider="up", model="a")]})
    result = await h.run()
    assert result.completion.model == "a"  # the retry succeeded
    assert h.providers["up"].availability().available
