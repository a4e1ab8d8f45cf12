"""A provider whose every call follows a script (pydantic-ai's FunctionModel idea), for fallback tests.

``script[model_id]`` is a list of outcomes consumed one per call: ``"ok"``, a ``ProviderError`` to raise
before any output, ``("cut", n)`` to stream ``n`` chunks and then break, or ``("slow", s)`` to wait ``s`` real
seconds before each chunk after the first. An exhausted script answers ok.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from typing import Any

from rhetor.config.models import ProviderSpec
from rhetor.engine.runtime import Clock
from rhetor.errors import MidStreamError, ProviderError
from rhetor.providers.base import Availability, Provider, ProviderRequest, ProviderResult, StreamDelta, StreamEnd
from rhetor.types import Usage

Outcome = Any


class ScriptedProvider(Provider):
    kind = "scripted"

    def __init__(self, name: str, spec: ProviderSpec, env: Mapping[str, str], script: dict[str, list[Outcome]],
                 usage: Usage | None = None) -> None:
        super().__init__(name, spec, env)
        self.script = script
        self.usage = usage or Usage(input_tokens=100, output_tokens=10)
        self.calls: list[tuple[str, float]] = []

    def configured(self) -> Availability:
        return Availability(True, "scripted")

    def _next(self, request: ProviderRequest) -> Outcome:
        self.calls.append((request.model_id, self.clock.now()))
        queue = self.script.get(request.model_id, [])
        outcome = queue.pop(0) if queue else "ok"
        if isinstance(outcome, ProviderError):
            raise outcome
        return outcome

    def _text(self, request: ProviderRequest) -> str:
        return f"answer from {request.model_id}"

    async def complete(self, request: ProviderRequest) -> ProviderResult:
        self._next(request)
        return ProviderResult(self._text(request), self.usage, "stop")

    async def stream(self, request: ProviderRequest) -> AsyncIterator[StreamDelta | StreamEnd]:
        outcome = self._next(request)
        words = self._text(request).split(" ")
        cut = outcome[1] if isinstance(outcome, tuple) and outcome[0] == "cut" else None
        pause = outcome[1] if isinstance(outcome, tuple) and outcome[0] == "slow" else 0.0
        sent = ""
        for i, word in enumerate(words):
            if pause and i:
                await asyncio.sleep(pause)
            if cut is not None and i == cut:
                raise MidStreamError("upstream cut", partial_text=sent, usage=Usage(100, i), provider=self.name,
                                     model=request.model_id)
            piece = word if i == 0 else " " + word
            sent += piece
            yield StreamDelta(piece)
        yield StreamEnd(self.usage, "stop")


def scripted_factory(script: dict[str, list[Outcome]], registry: dict[str, ScriptedProvider],  # type: ignore[no-untyped-def]
                     usage: Usage | None = None):
    """A ``provider_factory`` for ``build_engine``: every provider becomes a ScriptedProvider."""

    def factory(name: str, spec: ProviderSpec, env: Mapping[str, str], clock: Clock) -> Provider:
        provider = ScriptedProvider(name, spec, env, script, usage)
        provider.clock = clock
        registry[name] = provider
        return provider

    return factory
