"""``kind: openai``: the OpenAI Chat Completions API, or any OpenAI-compatible server via ``base_url``.

Requests go through the official SDK's ``AsyncOpenAI`` client, made once per provider on the SDK's
``DefaultAsyncHttpxClient`` with Rhetor's HTTP/1.1 transport under it (``_http``). The SDK sends them (auth, base
URL, retries, status errors) with its generic ``post`` and ``cast_to=httpx2.Response`` (``SDKPost.answer``): answers
are decoded here with msgspec (``_common.answer_json``), without the typed method's params transform and pydantic
models, and read with ``.get``; stream chunks come through a subclass of the SDK's stream class that splits the
events with ``_sse`` and keeps the SDK's rules for them. ``max_tokens`` (not ``max_completion_tokens``) is sent so
compatible servers (vLLM, llama.cpp, LM Studio...) accept it; streams ask for ``stream_options.include_usage`` so
the final chunk carries the token counts. Cached prompt tokens (``prompt_tokens_details.cached_tokens``) are
reported as cache reads and taken out of the input tokens.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any

from rhetor import errors
from rhetor.config.models import ProviderSpec
from rhetor.providers import _common, _sdk_client, _sse
from rhetor.providers._common import Boundary, Deadlines, StreamState
from rhetor.providers.base import (
    Provider,
    ProviderRequest,
    ProviderResult,
    StreamDelta,
    StreamEnd,
    resolve_key,
)
from rhetor.types import Usage

if TYPE_CHECKING:
    import openai


# Imported on first use: a provider with no key never loads its SDK (tens of MB of memory).
_sdk = _common.lazy_module("openai")
_httpx2 = _common.lazy_module("httpx2")
_http = _common.lazy_module("rhetor.providers._http")

__all__ = ["OpenAIProvider"]

_NO_KEY_NEEDED = "not-needed"  # sent to servers that take no key (the SDK insists on one)
_PATH = "/chat/completions"
_DRAIN_S = 0.1  # how long the rest of the body after `data: [DONE]` may take (the SDK's own bound)


def _options() -> dict[str, Any]:
    """The request options ``chat.completions.create`` gives: the API key as bearer auth, never an admin key
    (made into the provider's ``SDKPost`` once)."""
    return {**_common.unset_options(_sdk()), "security": {"bearer_auth": True}}


def _classify(exc: Exception, b: Boundary) -> errors.ProviderError | None:
    if isinstance(exc, _sdk().APIStatusError):
        body = _common.parse_body(_response_text(exc.response), exc.body)
        err = body.get("error") if isinstance(body, dict) and isinstance(body.get("error"), dict) else {}
        message = str(err.get("message") or exc.message)
        too_long = err.get("code") == "context_length_exceeded" or _common.looks_too_long(message)
        return b.status_error(exc.status_code, message, body=body, headers=exc.response.headers, too_long=too_long)
    if isinstance(exc, _sdk().APIConnectionError | _httpx2().TransportError):  # APITimeoutError included
        return _common.transport_error(exc, b, (_sdk().APITimeoutError, _httpx2().TimeoutException))
    if isinstance(exc, _sdk().APIError):  # an error object sent inside a 200 stream
        body = exc.body if isinstance(exc.body, dict) else {}
        kind = f"{body.get('type') or ''} {body.get('code') or ''}"
        if "rate_limit" in kind:
            return b.error(errors.RateLimitError, f"stream error: {exc.message}", body=exc.body)
        if "invalid_request" in kind:
            cls = errors.ContextTooLongError if _common.looks_too_long(exc.message, kind) else errors.BadRequestError
            return b.error(cls, f"stream error: {exc.message}", body=exc.body)
        return b.error(errors.OverloadedError, f"stream error: {exc.message}", body=exc.body)
    return None


def _events_cls() -> type:
    """The SDK's ``AsyncStream`` reading its events with ``_sse`` and keeping the SDK's rules for chat completion
    streams: each event's data is a JSON chunk, an object with an ``error`` is the SDK's ``APIError``, and
    ``data: [DONE]`` ends the answer, after which the rest of the body is read (for at most ``_DRAIN_S``) so the
    connection goes back to the pool. It yields the chunks of each network read as one list (``relay``); the
    chunks read before an error are yielded before it is raised. The response is closed however the stream ends."""
    sdk = _sdk()

    class ChatCompletionEvents(sdk.AsyncStream[object]):  # type: ignore[name-defined,misc]
        async def __stream__(self) -> AsyncIterator[list[Any]]:
            response = self.response
            chunks = response.aiter_bytes()
            try:
                async for batch in _sse.batches(chunks, lambda event: _chunk(sdk, event.data, response)):
                    yield batch
                # after [DONE] (or at the end of the body, where this returns at once)
                await _common.drain(chunks, asyncio.get_running_loop().time() + _DRAIN_S)
            finally:
                await response.aclose()

    return ChatCompletionEvents


def _chunk(sdk: Any, data: bytes, response: Any) -> Any:
    """One event's JSON chunk (``_sse.END`` for ``[DONE]``); an object with an ``error`` raises the SDK's
    ``APIError`` for it."""
    if data.startswith(b"[DONE]"):
        return _sse.END
    chunk = _sse.decode_json(data)
    if isinstance(chunk, dict) and chunk.get("error"):
        error = chunk["error"]
        message = error.get("message") if isinstance(error, dict) else None
        raise sdk.APIError(message if isinstance(message, str) and message else "An error occurred during streaming",
                           request=response.request, body=error)
    return chunk


def _response_text(response: Any) -> str | None:
    try:
        return response.text
    except Exception:  # noqa: BLE001 - a body that was never read
        return None


def _usage(usage: Any) -> Usage:
    """Rhetor's usage from a ``usage`` object: cached prompt tokens are cache reads, not input."""
    if not isinstance(usage, dict):
        return Usage()
    prompt = _common.count(usage.get("prompt_tokens"))
    details = usage.get("prompt_tokens_details")
    cached = _common.count(details.get("cached_tokens")) if isinstance(details, dict) else 0
    return Usage(input_tokens=max(0, prompt - cached), output_tokens=_common.count(usage.get("completion_tokens")),
                 cache_read_tokens=cached)


def _text(holder: Any) -> str:
    """The ``content`` of a ``message`` or ``delta``: a string, or "" when absent or null."""
    content = holder.get("content") if isinstance(holder, dict) else None
    if content is None:
        return ""
    if not isinstance(content, str):
        raise _common.MalformedChunk(f"content is a {type(content).__name__}, not a string")
    return content


_map_errors = _common.error_mapper(_classify)


class OpenAIProvider(_common.SDKClient, Provider):
    kind = "openai"

    def __init__(self, name: str, spec: ProviderSpec, env: Mapping[str, str]) -> None:
        super().__init__(name, spec, env)
        self._client: openai.AsyncOpenAI | None = None
        self._unavailable = _common.check_base_url(spec.base_url)
        key = resolve_key(spec, env)
        self._secrets = (key,) if key else ()
        if key is None and spec.api_key:
            self._unavailable = self._unavailable or f"no API key: set {spec.api_key.removeprefix('env:')}"
        elif key is None and spec.base_url is None:
            self._unavailable = self._unavailable or "no API key: configure api_key: env:OPENAI_API_KEY"
        if self._unavailable is None:
            timeout = _common.sdk_timeout(spec.timeouts, _httpx2().Timeout)
            self._client = _sdk_client.lean_client(_sdk().AsyncOpenAI)(
                api_key=key or _NO_KEY_NEEDED, base_url=spec.base_url, max_retries=spec.max_retries, timeout=timeout,
                http_client=_http().client(_sdk(), timeout),
            )
            self._stream_cls = _events_cls()
            self._url = _common.endpoint(self._client.base_url, _PATH)
            self._post = _common.SDKPost(_sdk(), self._client, self._url, _options())

    def _where(self) -> str:
        return f"OpenAI-compatible API at {self._client.base_url}"

    def _params(self, request: ProviderRequest) -> dict[str, Any]:
        params: dict[str, Any] = {
            "model": request.model_id,
            "messages": list(request.messages),  # msgspec writes each Message as {"role", "content"}
            "max_tokens": request.max_tokens,
        }
        if request.temperature is not None:
            params["temperature"] = request.temperature
        if request.stop:
            params["stop"] = list(request.stop)
        return params

    async def complete(self, request: ProviderRequest) -> ProviderResult:
        deadlines = Deadlines(self.spec.timeouts)
        b = Boundary(self.name, request.model_id, self._secrets, deadlines)
        post = self._poster(b)
        with _map_errors(b):
            async with asyncio.timeout_at(deadlines.first_token):
                response = _common.answer_json(await post.answer(_common.json_body(self._params(request))))
            choices = response.get("choices") if isinstance(response, dict) else None
            if not choices or not isinstance(choices, list) or not isinstance(choices[0], dict):
                raise _common.MalformedChunk("the answer has no choices")
            choice = choices[0]
            return ProviderResult(text=_text(choice.get("message")), usage=_usage(response.get("usage")),
                                  finish_reason=choice.get("finish_reason"))

    def stream(self, request: ProviderRequest) -> AsyncIterator[StreamDelta | StreamEnd]:
        body = {**self._params(request), "stream": True, "stream_options": {"include_usage": True}}
        return self._post_stream(request.model_id, body, self._consume, _map_errors,
                                 until_done=False, missing_end="the stream ended before its finish_reason")

    @staticmethod
    def _consume(chunk: Any, state: StreamState) -> str:
        """Record a chunk's usage and finish reason; return its text."""
        if not isinstance(chunk, dict):
            raise _common.MalformedChunk(f"a stream chunk is a {type(chunk).__name__}, not an object")
        usage = chunk.get("usage")
        if usage is not None:
            counted = _usage(usage)
            state.input_tokens, state.output_tokens = counted.input_tokens, counted.output_tokens
            state.cache_read_tokens = counted.cache_read_tokens
        choices = chunk.get("choices")
        if choices is None:
            raise _common.MalformedChunk("a stream chunk has no choices")
        if not choices:
            return ""
        choice = choices[0] if isinstance(choices, list) else None
        if not isinstance(choice, dict):
            raise _common.MalformedChunk("a stream chunk's choices are not a list of objects")
        finish_reason = choice.get("finish_reason")
        if finish_reason:
            state.finish_reason = finish_reason
        return _text(choice.get("delta"))
