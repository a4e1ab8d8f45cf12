"""``kind: anthropic``: the Anthropic Messages API through the official SDK's ``AsyncAnthropic`` client.

The client is made once per provider on the SDK's ``DefaultAsyncHttpxClient`` with Rhetor's HTTP/1.1 transport under
it (``_http``). The SDK sends each request (auth, ``anthropic-version``, base URL, retries, status errors) with its
generic ``post``: a message comes back as the bytes httpx2 read (``SDKPost.answer``), decoded here with msgspec,
stream events as decoded JSON, without pydantic models, and both are read with ``.get``. Stream events come through
a subclass of the SDK's stream class that splits them with ``_sse`` and keeps the SDK's rules (pings skipped,
``event: error`` its status error).

System messages go in the separate ``system`` parameter. ``temperature`` is not sent: the API version
this SDK speaks (``anthropic-version: 2026-10-21``) has no sampling parameters and answers 400 to them.
Usage comes from Anthropic's own numbers: ``input_tokens`` (uncached), ``output_tokens``,
``cache_read_input_tokens`` and ``cache_creation_input_tokens``; in a stream from ``message_start``
then each ``message_delta`` (whose counts are cumulative). An ``event: error`` inside a stream (e.g.
``overloaded_error``) is mapped like the HTTP error it stands for.
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
    import anthropic


# Imported on first use: a provider with no key never loads its SDK (tens of MB of memory).
_sdk = _common.lazy_module("anthropic")
_httpx2 = _common.lazy_module("httpx2")
_http = _common.lazy_module("rhetor.providers._http")

__all__ = ["AnthropicProvider"]

_PATH = "/v1/messages"

# Anthropic error types (``error.type``) for errors that come with no telling HTTP status (in streams).
_BY_TYPE: dict[str, type[errors.ProviderError]] = {
    "overloaded_error": errors.OverloadedError,
    "api_error": errors.OverloadedError,
    "rate_limit_error": errors.RateLimitError,
    "authentication_error": errors.AuthenticationError,
    "permission_error": errors.AuthenticationError,
    "billing_error": errors.AuthenticationError,
    "invalid_request_error": errors.BadRequestError,
    "not_found_error": errors.BadRequestError,
    "request_too_large": errors.BadRequestError,
    "timeout_error": errors.ProviderTimeoutError,
}


def _classify(exc: Exception, b: Boundary) -> errors.ProviderError | None:
    if isinstance(exc, _sdk().APIStatusError):
        body = exc.body
        err = body.get("error") if isinstance(body, dict) and isinstance(body.get("error"), dict) else {}
        kind, message = str(err.get("type") or ""), str(err.get("message") or exc.message)
        too_long = _common.looks_too_long(message)
        if exc.status_code >= 400:
            return b.status_error(exc.status_code, message, body=body, headers=exc.response.headers,
                                  too_long=too_long, overloaded=kind == "overloaded_error")
        # an `event: error` inside a 200 stream: only the error type tells what happened
        cls = _BY_TYPE.get(kind, errors.OverloadedError)
        if cls is errors.BadRequestError and too_long:
            cls = errors.ContextTooLongError
        return b.error(cls, f"stream error {kind or 'unknown'}: {message}", body=body)
    if isinstance(exc, _sdk().APIConnectionError | _httpx2().TransportError):  # APITimeoutError included
        return _common.transport_error(exc, b, (_sdk().APITimeoutError, _httpx2().TimeoutException))
    return None


def _events_cls() -> type:
    """The SDK's ``AsyncStream`` reading its events with ``_sse`` and keeping the SDK's rules for Messages
    streams: ``ping`` events and events without a name or data are skipped, ``event: error`` is the SDK's status
    error for its body, every other event's data is a JSON object. It yields the events of each network read as
    one list (``relay``); the events read before an error are yielded before it is raised. The response is closed
    however the stream ends (``relay`` reads the body to its end after ``message_stop``)."""
    sdk = _sdk()

    class MessageEvents(sdk.AsyncStream[object]):  # type: ignore[name-defined,misc]
        def _rhetor_error(self, data: bytes) -> Exception:
            """The SDK's status error for an ``event: error`` (its body as JSON, else as text)."""
            response = self.response
            try:
                body: Any = _sse.decode_json(data)
                message = f"{body}"
            except _common.MalformedChunk:
                body = data.decode("utf-8", "replace")
                message = body or f"Error code: {response.status_code}"
            return self._client._make_status_error(message, body=body, response=response)

        def _rhetor_event(self, event: _sse.Event) -> Any:  # (names the SDK's class will not take)
            name = event.event
            if name is None or name == "ping" or (not event.data and name != "error"):
                return _sse.SKIP
            if name == "error":
                raise self._rhetor_error(event.data)
            return _sse.decode_json(event.data)

        async def __stream__(self) -> AsyncIterator[list[Any]]:
            response = self.response
            try:
                async for batch in _sse.batches(response.aiter_bytes(), self._rhetor_event):
                    yield batch
            finally:
                await response.aclose()

    return MessageEvents


def _usage(usage: Any) -> Usage:
    if not isinstance(usage, dict):
        return Usage()
    count = _common.count
    return Usage(input_tokens=count(usage.get("input_tokens")), output_tokens=count(usage.get("output_tokens")),
                 cache_read_tokens=count(usage.get("cache_read_input_tokens")),
                 cache_write_tokens=count(usage.get("cache_creation_input_tokens")))


def _text(block: Any) -> str:
    """The text of a ``text`` block or ``text_delta``."""
    text = block.get("text")
    if text is None:
        return ""
    if not isinstance(text, str):
        raise _common.MalformedChunk(f"text is a {type(text).__name__}, not a string")
    return text


# message_delta's cumulative usage fields → StreamState's
_DELTA_USAGE = (("output_tokens", "output_tokens"), ("input_tokens", "input_tokens"),
                ("cache_read_tokens", "cache_read_input_tokens"),
                ("cache_write_tokens", "cache_creation_input_tokens"))


_map_errors = _common.error_mapper(_classify)


class AnthropicProvider(_common.SDKClient, Provider):
    kind = "anthropic"

    def __init__(self, name: str, spec: ProviderSpec, env: Mapping[str, str]) -> None:
        super().__init__(name, spec, env)
        self._client: anthropic.AsyncAnthropic | None = None
        self._unavailable = _common.check_base_url(spec.base_url)
        key = resolve_key(spec, env)
        self._secrets = (key,) if key else ()
        if key is None:
            var = spec.api_key.removeprefix("env:") if spec.api_key else None
            self._unavailable = self._unavailable or (
                f"no API key: set {var}" if var else "no API key: configure api_key: env:ANTHROPIC_API_KEY")
        if self._unavailable is None:
            timeout = _common.sdk_timeout(spec.timeouts, _httpx2().Timeout)
            self._client = _sdk_client.lean_client(_sdk().AsyncAnthropic)(
                api_key=key, base_url=spec.base_url, max_retries=spec.max_retries, timeout=timeout,
                http_client=_http().client(_sdk(), timeout),
            )
            self._stream_cls = _events_cls()
            self._url = _common.endpoint(self._client.base_url, _PATH)
            self._post = _common.SDKPost(_sdk(), self._client, self._url, _common.unset_options(_sdk()))

    def _where(self) -> str:
        return f"Anthropic API at {self._client.base_url}"

    def _params(self, request: ProviderRequest) -> dict[str, Any]:
        params: dict[str, Any] = {
            "model": request.model_id,
            "messages": list(request.dialogue),  # msgspec writes each Message as {"role", "content"}
            "max_tokens": request.max_tokens,
        }
        if request.system is not None:
            params["system"] = request.system
        if request.stop:
            params["stop_sequences"] = list(request.stop)
        return params

    async def complete(self, request: ProviderRequest) -> ProviderResult:
        deadlines = Deadlines(self.spec.timeouts)
        b = Boundary(self.name, request.model_id, self._secrets, deadlines)
        post = self._poster(b)
        with _map_errors(b):
            async with asyncio.timeout_at(deadlines.first_token):
                message = _common.answer_json(await post.answer(_common.json_body(self._params(request))))
            content = message.get("content") if isinstance(message, dict) else None
            if content is None:
                raise _common.MalformedChunk("the answer has no content")
            if not isinstance(content, list):
                raise _common.MalformedChunk("the answer's content is not a list")
            text = "".join(_text(block) for block in content if isinstance(block, dict) and block.get("type") == "text")
            return ProviderResult(text=text, usage=_usage(message.get("usage")),
                                  finish_reason=message.get("stop_reason"))

    def stream(self, request: ProviderRequest) -> AsyncIterator[StreamDelta | StreamEnd]:
        body = {**self._params(request), "stream": True}
        return self._post_stream(request.model_id, body, self._consume, _map_errors,
                                 until_done=True, missing_end="the stream ended before message_stop")

    @staticmethod
    def _consume(event: Any, state: StreamState) -> str:
        """Record an event's usage and stop reason; return its text."""
        kind = event.get("type") if isinstance(event, dict) else None
        if kind == "content_block_delta":
            delta = event.get("delta")
            if isinstance(delta, dict) and delta.get("type") == "text_delta":
                return _text(delta)
        elif kind == "message_start":
            message = event.get("message")
            usage = _usage(message.get("usage") if isinstance(message, dict) else None)
            state.input_tokens, state.output_tokens = usage.input_tokens, usage.output_tokens
            state.cache_read_tokens, state.cache_write_tokens = usage.cache_read_tokens, usage.cache_write_tokens
        elif kind == "message_delta":
            delta = event.get("delta")
            stop_reason = delta.get("stop_reason") if isinstance(delta, dict) else None
            state.finish_reason = stop_reason or state.finish_reason
            usage = event.get("usage")
            if isinstance(usage, dict):
                # message_delta counts are cumulative; fields it leaves out (null) keep message_start's
                for field, key in _DELTA_USAGE:
                    value = usage.get(key)
                    if value is not None:
                        setattr(state, field, _common.count(value))
        elif kind == "message_stop":
            state.done = True
        elif kind is None:
            raise _common.MalformedChunk("a stream event has no type")
        return ""
