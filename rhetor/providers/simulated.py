"""The offline provider: deterministic answers with no network and no key, at a cost of $0.

It is what answers when no API key is configured. The model id may carry behaviours, so pipelines and
tests can exercise failure paths with no network (the idea of TensorZero's dummy provider)::

    simulated                      echo the last user message, streamed in several chunks
    simulated:error=rate-limited   fail with that Rhetor error code before any output
    simulated:midstream            stream two chunks, then break with MidStreamError
    simulated:delay=0.5            wait that many seconds before the first chunk
    simulated:burst                produce all chunks at once, as when one upstream read holds many
                                   (combines: simulated:midstream:burst)

Token usage follows ``rhetor.tokens`` (one token per four characters, plus per-message framing).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from rhetor import errors
from rhetor.providers.base import Availability, Provider, ProviderRequest, ProviderResult, StreamDelta, StreamEnd
from rhetor.tokens import estimate_messages_tokens, estimate_tokens
from rhetor.types import Usage

__all__ = ["SimulatedProvider"]

_ERRORS: dict[str, type[errors.ProviderError]] = {
    cls.code: cls
    for cls in (
        errors.AuthenticationError, errors.BadRequestError, errors.ContextTooLongError, errors.RateLimitError,
        errors.OverloadedError, errors.ProviderTimeoutError, errors.ProviderConnectionError,
        errors.ProviderUnavailableError,
    )
}
_WORDS_PER_CHUNK = 3


class _Behaviour:
    __slots__ = ("burst", "delay", "error", "midstream")

    def __init__(self, model_id: str) -> None:
        self.error: str | None = None
        self.midstream = False
        self.burst = False
        self.delay = 0.0
        for part in model_id.split(":")[1:]:
            key, _, value = part.partition("=")
            if key == "error":
                self.error = value
            elif key == "midstream":
                self.midstream = True
            elif key == "delay":
                self.delay = float(value)
            elif key == "burst":
                self.burst = True


class SimulatedProvider(Provider):
    kind = "simulated"

    def configured(self) -> Availability:
        return Availability(True, "offline provider, always available")

    def _answer(self, request: ProviderRequest) -> str:
        last = next((m.content for m in reversed(request.messages) if m.role == "user"), "")
        shown = " ".join(last.split())
        if len(shown) > 200:
            shown = shown[:197] + "..."
        text = (f"This is a simulated response from Rhetor (no LLM provider was available). "
                f"You said: \"{shown}\"")
        words = text.split(" ")
        return " ".join(words[: max(1, request.max_tokens)])

    def _usage(self, request: ProviderRequest, text: str) -> Usage:
        return Usage(input_tokens=estimate_messages_tokens(request.messages), output_tokens=estimate_tokens(text))

    def _fail(self, request: ProviderRequest, behaviour: _Behaviour) -> None:
        if behaviour.error is None:
            return
        cls = _ERRORS.get(behaviour.error, errors.OverloadedError)
        raise cls(f"simulated {behaviour.error}", provider=self.name, model=request.model_id,
                  upstream_status=None)

    async def complete(self, request: ProviderRequest) -> ProviderResult:
        behaviour = _Behaviour(request.model_id)
        if behaviour.delay:
            await asyncio.sleep(behaviour.delay)
        self._fail(request, behaviour)
        text = self._answer(request)
        if behaviour.midstream:
            raise errors.ProviderConnectionError("simulated connection loss", provider=self.name,
                                                 model=request.model_id)
        return ProviderResult(text=text, usage=self._usage(request, text), finish_reason="stop")

    async def stream(self, request: ProviderRequest) -> AsyncIterator[StreamDelta | StreamEnd]:
        behaviour = _Behaviour(request.model_id)
        if behaviour.delay:
            await asyncio.sleep(behaviour.delay)
        self._fail(request, behaviour)
        text = self._answer(request)
        words = text.split(" ")
        sent = ""
        for i in range(0, len(words), _WORDS_PER_CHUNK):
            if behaviour.midstream and i >= 2 * _WORDS_PER_CHUNK:
                raise errors.MidStreamError("simulated stream cut", partial_text=sent,
                                            usage=self._usage(request, sent), provider=self.name,
                                            model=request.model_id)
            piece = " ".join(words[i : i + _WORDS_PER_CHUNK])
            piece = piece if i == 0 else " " + piece
            sent += piece
            yield StreamDelta(piece)
            if not behaviour.burst:
                await asyncio.sleep(0)  # one chunk per turn of the event loop, as a paced upstream sends them
        yield StreamEnd(usage=self._usage(request, text), finish_reason="stop")
