"""``kind: ollama``: a local (or remote) Ollama server's ``/api/chat`` through ``ollama.AsyncClient``.

No key is needed; the provider is available unless ``base_url`` is malformed (whether the server is
up is only known by calling it: a refused connection is a retryable ``ProviderConnectionError``).
``max_tokens``, ``temperature`` and ``stop`` go in ``options`` (``num_predict``...); usage is Ollama's
``prompt_eval_count`` and ``eval_count`` from the final (``done: true``) object.

The SDK drops an HTTP error's headers, so a 429 from Ollama carries no ``retry_after``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from typing import Any

import httpx
import ollama

from rhetor import errors
from rhetor.config.models import ProviderSpec
from rhetor.providers import _common
from rhetor.providers._common import Boundary, Deadlines, StreamState
from rhetor.providers.base import Provider, ProviderRequest, ProviderResult, StreamDelta, StreamEnd
from rhetor.types import Usage

__all__ = ["OllamaProvider"]

_DEFAULT_URL = "http://127.0.0.1:11434"


def _classify(exc: Exception, b: Boundary) -> errors.ProviderError | None:
    if isinstance(exc, ollama.ResponseError):
        message = str(exc.error)
        body = {"error": exc.error}
        if exc.status_code >= 400:
            return b.status_error(exc.status_code, message, body=body, headers=None,
                                  too_long=_common.looks_too_long(message))
        # an {"error": ...} line inside a stream: the model runner failed while answering
        return b.error(errors.OverloadedError, f"stream error: {message}", body=body)
    if isinstance(exc, httpx.TimeoutException):
        return b.error(errors.ProviderTimeoutError, "the request timed out")
    if isinstance(exc, ConnectionError | httpx.TransportError):  # the SDK turns ConnectError into ConnectionError
        return b.error(errors.ProviderConnectionError, f"connection failed ({type(exc).__name__})")
    if isinstance(exc, ollama.RequestError):
        return b.error(errors.BadRequestError, f"request refused by the SDK: {exc.error}")
    return None


def _usage(response: Any) -> Usage:
    return Usage(input_tokens=getattr(response, "prompt_eval_count", None) or 0,
                 output_tokens=getattr(response, "eval_count", None) or 0)


_map_errors = _common.error_mapper(_classify)


class OllamaProvider(_common.SDKClient, Provider):
    kind = "ollama"

    def __init__(self, name: str, spec: ProviderSpec, env: Mapping[str, str]) -> None:
        super().__init__(name, spec, env)
        self._client: ollama.AsyncClient | None = None
        self._unavailable = _common.check_base_url(spec.base_url)
        if self._unavailable is None:
            self._client = ollama.AsyncClient(host=spec.base_url or _DEFAULT_URL,
                                              timeout=_common.sdk_timeout(spec.timeouts, httpx.Timeout),
                                              transport=httpx.AsyncHTTPTransport(retries=spec.max_retries))

    def _where(self) -> str:
        return f"Ollama at {self.spec.base_url or _DEFAULT_URL}"

    def _args(self, request: ProviderRequest) -> dict[str, Any]:
        options: dict[str, Any] = {"num_predict": request.max_tokens}
        if request.temperature is not None:
            options["temperature"] = request.temperature
        if request.stop:
            options["stop"] = list(request.stop)
        return {"model": request.model_id, "messages": [m.to_dict() for m in request.messages], "options": options}

    async def complete(self, request: ProviderRequest) -> ProviderResult:
        deadlines = Deadlines(self.spec.timeouts)
        b = Boundary(self.name, request.model_id, (), deadlines)
        client = self._ready(b)
        with _map_errors(b):
            async with asyncio.timeout_at(deadlines.first_token):
                response = await client.chat(**self._args(request), stream=False)
            message = getattr(response, "message", None)
            if message is None:
                raise _common.MalformedChunk("the answer has no message")
            return ProviderResult(text=message.content or "", usage=_usage(response),
                                  finish_reason=getattr(response, "done_reason", None))

    async def stream(self, request: ProviderRequest) -> AsyncIterator[StreamDelta | StreamEnd]:
        state = StreamState()
        deadlines = Deadlines(self.spec.timeouts)
        b = Boundary(self.name, request.model_id, (), deadlines, state)
        client = self._ready(b)
        parts = None
        try:
            with _map_errors(b):
                parts = await client.chat(**self._args(request), stream=True)  # sends on first read
            async for event in _common.relay(_common.one_by_one(parts), self._consume, state, deadlines,
                                             _map_errors, b, until_done=True,
                                             missing_end="the stream ended before its done line"):
                yield event
        finally:
            if parts is not None:
                await parts.aclose()

    @staticmethod
    def _consume(part: Any, state: StreamState) -> str:
        """Record the final part's counts and reason; return the part's text."""
        message = getattr(part, "message", None)
        text = (getattr(message, "content", None) or "") if message is not None else ""
        if getattr(part, "done", False):
            state.done = True
            state.finish_reason = getattr(part, "done_reason", None)
            usage = _usage(part)
            state.input_tokens, state.output_tokens = usage.input_tokens, usage.output_tokens
        return text
