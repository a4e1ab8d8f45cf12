"""Helpers shared by the SDK-backed providers (``anthropic``, ``openai``, ``ollama``).

* ``sdk_timeout``: the SDK's httpx timeout from ``timeouts:`` (connect, read ≈ first_token, total).
* ``Deadlines``: the first-token and total deadlines one attempt must meet, enforced with
  ``asyncio.timeout_at`` around each wait (never across a ``yield``).
* ``StreamState``: the text and usage known so far, so a broken stream becomes a ``MidStreamError``.
* ``Boundary``: builds Rhetor's provider errors (status → class, ``Retry-After``, secrets removed).
* ``transport_error``: a timeout or a connection failure, from the SDK's error or httpx2's.
* ``parse_retry_after``: ``retry-after-ms``, then ``Retry-After`` in seconds or as an HTTP date.
* ``json_body``: a request body as JSON bytes, for the SDKs' ``post(content=...)``.
"""

from __future__ import annotations

import asyncio
import email.utils
import importlib
import json
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any
from urllib.parse import urlsplit

import msgspec

from rhetor import errors
from rhetor.config.models import TimeoutsSpec
from rhetor.providers.base import Availability, StreamDelta, StreamEnd
from rhetor.types import Usage

__all__ = [
    "Boundary",
    "Deadlines",
    "MalformedChunk",
    "SDKPost",
    "StreamState",
    "answer_json",
    "check_base_url",
    "count",
    "drain",
    "endpoint",
    "json_body",
    "kept_url",
    "looks_too_long",
    "one_by_one",
    "parse_retry_after",
    "sdk_timeout",
    "transport_error",
    "unset_options",
]

_TOO_LONG = ("maximum context length", "context length", "context_length", "context window", "too long",
             "prompt is too long")
_REDACTED = "[redacted]"
_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder()


def json_body(body: Mapping[str, Any]) -> bytes:
    """``body`` as the JSON bytes the SDKs would send (compact, UTF-8), for ``post(content=...)``: msgspec takes
    a tenth of the time of the SDKs' ``json.dumps`` (22 against 220 µs for a 200-message conversation). The
    SDKs' default ``Content-Type: application/json`` goes with it."""
    return _encoder.encode(body)


class MalformedChunk(Exception):
    """A response or stream chunk that does not have the vendor's documented shape."""


def answer_json(content: bytes) -> Any:
    """A whole answer's body (``SDKPost.answer``) as JSON, whatever its ``Content-Type``:
    msgspec decodes it in a fifth of the time of the SDK's ``response.json()`` and ``cast_to=object`` parse.
    A body that is not JSON is a ``MalformedChunk``."""
    try:
        return _decoder.decode(content)
    except msgspec.DecodeError as exc:
        raise MalformedChunk(f"the answer is not JSON ({exc}): {content[:200]!r}") from None


def sdk_timeout(timeouts: TimeoutsSpec, timeout_cls: Any) -> Any:
    """``timeout_cls`` (``httpx.Timeout`` or ``httpx2.Timeout``) from a provider's ``timeouts:``."""
    return timeout_cls(timeouts.total, connect=timeouts.connect, read=timeouts.first_token)


def endpoint(base_url: Any, path: str) -> str:
    """``path`` joined to an SDK client's ``base_url`` (an ``httpx2.URL``) exactly as the SDK joins a relative path,
    as an absolute URL string: made once per provider, it spares the SDK a URL parse and a URL copy per request
    (the SDK sends an absolute URL as it is)."""
    return str(base_url.copy_with(raw_path=base_url.raw_path + path.lstrip("/").encode("ascii")))


def unset_options(sdk: Any) -> dict[str, Any]:
    """Request options for the SDK's ``post``: its ``NOT_GIVEN`` for the options Rhetor leaves to the client
    (headers, retries, timeout, post-parser). Left out, each is filled with a deep copy of the field's
    ``NotGiven()`` default when the SDK builds its options model (about 10 µs apiece, per request); the SDK
    reads the two alike (``isinstance(..., NotGiven)``)."""
    given = sdk.NOT_GIVEN
    return {"headers": given, "max_retries": given, "timeout": given, "post_parser": given}


class SDKPost:
    """``client.post(url, content=..., options=options)`` of an SDK client, with the options model ``post`` builds
    made once per provider. ``FinalRequestOptions.construct`` fills each of its fields on every call (NOT_GIVEN
    stripped, deep copies of the defaults: ~30 µs); a shallow copy of the one made here, with the request's body and
    fresh copies of its mutable fields, reads the same in every field (tested against ``post``'s own) in ~3 µs. The
    SDK's ``request``, which ``post`` calls with its model, sends it as before: auth, retries, status errors."""

    __slots__ = ("_client", "_mutable", "_raw", "_template")

    def __init__(self, sdk: Any, client: Any, url: str, options: Mapping[str, Any]) -> None:
        model = importlib.import_module(f"{sdk.__name__}._models").FinalRequestOptions
        self._client = client
        # what the SDK's post() builds, with files=to_httpx_files(None) and no JSON body (Rhetor sends bytes)
        self._template = model.construct(method="post", url=url, json_data=None, content=None, files=None, **options)
        self._mutable = tuple(name for name, value in vars(self._template).items() if isinstance(value, dict | list))
        self._raw = importlib.import_module("httpx2").Response  # the SDKs' HTTP library, loaded with them

    def options(self, content: bytes) -> Any:
        """The options model of one request: the one made once, copied, with ``content`` and its own dicts."""
        options = self._template.model_copy()
        fields = options.__dict__
        fields["content"] = content
        for name in self._mutable:
            fields[name] = fields[name].copy()
        return options

    def __call__(self, content: bytes, *, cast_to: type, stream: bool = False, stream_cls: type | None = None) -> Any:
        return self._client.request(cast_to, self.options(content), stream=stream, stream_cls=stream_cls)

    async def answer(self, content: bytes) -> bytes:
        """The whole answer's body to a request of ``content``. Asked for as ``cast_to=httpx2.Response``, which the
        SDK hands back as httpx2 read it (after its retries and status errors, as for any other cast) rather than
        wrapping it in its own response object to read the same bytes out again (``cast_to=bytes``: 5% of the
        call's instructions)."""
        response = await self._client.request(self._raw, self.options(content))
        body: bytes = response.content
        return body


def kept_url(holder: Any, url: Any, parse: Callable[[Any], Any]) -> Any:
    """``parse(url)``, kept on ``holder`` (``_rhetor_url``) for the last absolute URL string: an ``httpx2.URL`` is
    immutable, so one parse serves every request to the same endpoint. Only a URL that comes back as the same
    string is kept (absolute, already in normal form), so a client's ``base_url`` never matters to what is kept."""
    memo = holder._rhetor_url
    if memo is not None and memo[0] == url:
        return memo[1]
    parsed = parse(url)
    if isinstance(url, str) and str(parsed) == url:
        holder._rhetor_url = (url, parsed)
    return parsed


def count(value: Any) -> int:
    """A token count from a vendor's JSON: an int (a whole float is taken too), else 0."""
    if value.__class__ is int:
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return 0


def check_base_url(base_url: str | None) -> str | None:
    """Why ``base_url`` cannot be used (malformed), or None when it is fine or unset."""
    if base_url is None:
        return None
    try:
        parts = urlsplit(base_url)
        port_ok = parts.port is None or parts.port > 0
    except ValueError:
        return f"malformed base_url {base_url!r}"
    if parts.scheme not in ("http", "https") or not parts.hostname or not port_ok:
        return f"malformed base_url {base_url!r}: expected http(s)://host[:port][/path]"
    return None


def parse_retry_after(headers: Mapping[str, str] | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``Retry-After`` (seconds or HTTP date), or None."""
    if not headers:
        return None
    lowered = {str(k).lower(): str(v) for k, v in headers.items()}
    ms = lowered.get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000.0)
        except ValueError:
            pass
    value = lowered.get("retry-after", "").strip()
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def looks_too_long(*texts: object) -> bool:
    """Whether a vendor error message says the prompt does not fit the model's context."""
    joined = " ".join(str(t) for t in texts if t).lower()
    return any(marker in joined for marker in _TOO_LONG)


class Deadlines:
    """The first-token and total deadlines of one attempt, on the running loop's clock."""

    def __init__(self, timeouts: TimeoutsSpec) -> None:
        self.timeouts = timeouts
        self.started = asyncio.get_running_loop().time()
        self.total = self.started + timeouts.total
        self.first_token = min(self.started + timeouts.first_token, self.total)

    def next(self, started: bool) -> float:
        """The deadline of the next wait: the first token's until one came, then the total."""
        return self.total if started else self.first_token

    def message(self) -> str:
        if asyncio.get_running_loop().time() >= self.total - 1e-3:
            return f"no complete answer within the total timeout of {self.timeouts.total:g}s"
        return f"no first token within {self.timeouts.first_token:g}s"


@dataclass
class StreamState:
    """What a stream has produced so far: text sent to the caller, usage reported, finish reason."""

    parts: list[str] = field(default_factory=list)
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    finish_reason: str | None = None
    done: bool = False

    @property
    def text(self) -> str:
        return "".join(self.parts)

    @property
    def started(self) -> bool:
        return bool(self.parts)

    def usage(self) -> Usage:
        return Usage(input_tokens=self.input_tokens, output_tokens=self.output_tokens,
                     cache_read_tokens=self.cache_read_tokens, cache_write_tokens=self.cache_write_tokens)


async def drain(events: Any, deadline: float) -> None:
    """Read what follows a stream's final event (the end of the body) so its connection goes back to
    the pool; gives up quietly after a second, at ``deadline`` or on any error: the answer is complete."""
    try:
        async with asyncio.timeout_at(min(deadline, asyncio.get_running_loop().time() + 1.0)):
            async for _ in events:
                pass
    except Exception:  # noqa: BLE001 - the answer is already complete
        return


def _redact(value: Any, secrets: tuple[str, ...]) -> Any:
    if isinstance(value, str):
        for secret in secrets:
            value = value.replace(secret, _REDACTED)
        return value
    if isinstance(value, Mapping):
        return {_redact(k, secrets): _redact(v, secrets) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_redact(v, secrets) for v in value]
    return value


def parse_body(text: str | None, fallback: Any = None) -> Any:
    """The vendor's error body as parsed JSON when it is JSON, else the text (or ``fallback``)."""
    if text:
        try:
            return json.loads(text)
        except ValueError:
            return text
    return fallback


@dataclass
class Boundary:
    """Builds Rhetor's errors for one attempt of ``provider`` on ``model``; never lets a secret through."""

    provider: str
    model: str
    secrets: tuple[str, ...] = ()
    deadlines: Deadlines | None = None
    state: StreamState | None = None

    def error(self, cls: type[errors.ProviderError], message: str, *, status: int | None = None,
              body: Any = None, **kwargs: Any) -> errors.ProviderError:
        return cls(_redact(f"{self.provider} ({self.model}): {message}", self.secrets), provider=self.provider,
                   model=self.model, upstream_status=status, body=_redact(body, self.secrets), **kwargs)

    def status_error(self, status: int, message: str, *, body: Any, headers: Mapping[str, str] | None,
                     too_long: bool = False, overloaded: bool = False) -> errors.ProviderError:
        """The error for an HTTP error answer (401/403, 400/404/422, 429, 5xx/529...)."""
        text = f"upstream answered {status}: {message}"
        if status in (401, 403):
            return self.error(errors.AuthenticationError, text, status=status, body=body)
        if status == 429:
            return self.error(errors.RateLimitError, text, status=status, body=body,
                              retry_after=parse_retry_after(headers))
        if overloaded or status >= 500:
            return self.error(errors.OverloadedError, text, status=status, body=body)
        if status == 408:
            return self.error(errors.ProviderTimeoutError, text, status=status, body=body)
        if too_long and status in (400, 413, 422):
            return self.error(errors.ContextTooLongError, text, status=status, body=body)
        return self.error(errors.BadRequestError, text, status=status, body=body)

    def timeout(self) -> errors.ProviderError:
        message = self.deadlines.message() if self.deadlines else "timed out"
        return self.error(errors.ProviderTimeoutError, message)

    def surface(self, err: errors.ProviderError) -> errors.ProviderError:
        """``err`` as raised to the caller: a ``MidStreamError`` once a stream has sent text."""
        state = self.state
        if state is None or not state.started or isinstance(err, errors.MidStreamError):
            return err
        return errors.MidStreamError(
            f"stream broke after {len(state.text)} characters: {err.message}", partial_text=state.text,
            usage=state.usage(), provider=self.provider, model=self.model, upstream_status=err.upstream_status,
            body=err.body, details={"cause": err.code, "cause_retryable": err.retryable},
        )

    def translate(self, exc: BaseException) -> errors.ProviderError | None:
        """The errors every provider maps alike: its own, deadlines and malformed chunks."""
        if isinstance(exc, errors.ProviderError):
            return exc
        if isinstance(exc, TimeoutError):
            return self.timeout()
        if isinstance(exc, (MalformedChunk, json.JSONDecodeError)):
            return self.error(errors.ProviderConnectionError, f"malformed response from upstream: {exc}")
        return None


def transport_error(exc: BaseException, b: Boundary, timeouts: tuple[type[BaseException], ...]
                    ) -> errors.ProviderError:
    """A timeout or a connection failure, for an SDK connection error or an httpx2 transport error ``exc``: a
    timeout when it is one of ``timeouts`` (the SDK's and httpx2's timeout classes), named after httpx2's error
    (``ConnectError``, ``ReadError``, ``RemoteProtocolError``...) otherwise."""
    if isinstance(exc, timeouts):
        return b.error(errors.ProviderTimeoutError, "the request timed out")
    return b.error(errors.ProviderConnectionError, f"connection failed ({type(exc.__cause__ or exc).__name__})")


_NO_EVENT = object()


async def relay(batches: Any, consume: Callable[[Any, StreamState], str], state: StreamState, deadlines: Deadlines,
                map_errors: Callable[[Boundary], Any], boundary: Boundary, *, until_done: bool,
                missing_end: str) -> AsyncIterator[StreamDelta | StreamEnd]:
    """Relay an SDK stream as Rhetor deltas under the first-token and total deadlines.

    ``batches`` yields the stream's events a read at a time: one ``_sse.Read`` per network read from the stream
    classes of ``openai`` and ``anthropic`` (under load a read holds a dozen events; each is decoded only as it is
    taken, so the first of a burst is relayed before the rest are decoded), or one list per event from
    ``one_by_one`` around an SDK that yields them singly. The deadline is enforced around each read, not each
    event: the events of one read are already here. ``consume`` records an event's usage/finish in ``state`` and
    returns its text; each text is its own delta, as it came. With ``until_done`` the vendor marks the end in an
    event (``state.done``; the rest of the body is drained so the connection returns to the pool), else the
    stream ends when exhausted and must have reported a finish reason. Ending early either way is a
    ``MalformedChunk`` (a ``MidStreamError`` once text was sent).
    """
    guard = map_errors(boundary)  # stateless: one for the whole stream
    while not (until_done and state.done):
        with guard:
            async with asyncio.timeout_at(deadlines.next(state.started)):
                try:
                    batch = await batches.__anext__()
                except StopAsyncIteration:
                    batch = None
            if batch is None:
                if until_done or state.finish_reason is None:
                    raise MalformedChunk(missing_end)
                break
        events = iter(batch)  # a read's events may be decoded as they are taken (``_sse.Read``): mapped too
        while True:
            with guard:
                event = next(events, _NO_EVENT)
                if event is _NO_EVENT:
                    break
                text = consume(event, state)
            if text:
                state.parts.append(text)
                yield StreamDelta(text)
            if until_done and state.done:
                break
    if until_done:
        await drain(batches, deadlines.total)
    yield StreamEnd(usage=state.usage(), finish_reason=state.finish_reason)


async def one_by_one(events: AsyncIterator[Any]) -> AsyncIterator[list[Any]]:
    """``events`` as ``relay``'s batches, for an SDK stream that yields one event at a time."""
    async for event in events:
        yield [event]


class _MapErrors:
    """The context manager of ``error_mapper``: a class, not a generator, as ``relay`` enters one per event."""

    __slots__ = ("boundary", "classify")

    def __init__(self, classify: Callable[[Exception, Boundary], errors.ProviderError | None],
                 boundary: Boundary) -> None:
        self.classify = classify
        self.boundary = boundary

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any) -> bool:
        if exc is None or not isinstance(exc, Exception):
            return False  # no error, or a cancellation / exit that is not ours to map
        boundary = self.boundary
        mapped = boundary.translate(exc) or self.classify(exc, boundary)
        if mapped is None:
            return False  # re-raised untouched
        raise boundary.surface(mapped) from None


def error_mapper(classify: Callable[[Exception, Boundary], errors.ProviderError | None]) -> Callable[[Boundary], Any]:
    """A context manager turning SDK, httpx and deadline errors into Rhetor's ``ProviderError`` classes
    (``MidStreamError`` once text was sent); ``classify`` knows one vendor's SDK exceptions."""
    return partial(_MapErrors, classify)


class SDKClient:
    """The lifecycle every SDK provider shares: a client built once (None when the provider cannot be
    used, with the reason in ``_unavailable``), closed on ``aclose`` (with its HTTP client, and so the
    connections of ``_http.Transport``)."""

    _client: Any = None
    _unavailable: str | None = None
    _stream_cls: Any = None
    """The provider's subclass of the SDK's ``AsyncStream`` (events read with ``_sse``), set with the client."""
    _url: str = ""
    """The endpoint's absolute URL (``endpoint``), set with the client."""
    _post: SDKPost | None = None
    """The client's ``post`` to ``_url``, set with the client."""
    _configured: Availability | None = None

    def _where(self) -> str:
        """Where requests go, for ``/providers``."""
        return str(self._client.base_url)

    def configured(self) -> Availability:
        """Settled when the provider is built (the client is made once, or not at all), so made once: the route
        stage asks for every model of a chain on every request."""
        if self._configured is None:
            self._configured = (Availability(False, self._unavailable or "not configured") if self._client is None
                                else Availability(True, self._where()))
        return self._configured

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.close()

    def _ready(self, boundary: Boundary) -> Any:
        if self._client is None:
            raise boundary.error(errors.ProviderUnavailableError, self._unavailable or "not configured")
        return self._client

    def _poster(self, boundary: Boundary) -> SDKPost:
        """For a provider that posts through ``SDKPost``: its ``post`` to the endpoint (``_ready`` otherwise)."""
        if self._post is None:
            raise boundary.error(errors.ProviderUnavailableError, self._unavailable or "not configured")
        return self._post

    async def _post_stream(self, model_id: str, body: dict[str, Any],
                           consume: Callable[[Any, StreamState], str], map_errors: Callable[[Boundary], Any], *,
                           until_done: bool, missing_end: str) -> AsyncIterator[StreamDelta | StreamEnd]:
        """POST ``body`` to the endpoint as a stream through the SDK (``_stream_cls``: the SSE events of each
        network read as decoded JSON) and ``relay`` them; the SDK stream is closed however the stream ends."""
        state = StreamState()
        deadlines = Deadlines(self.spec.timeouts)  # type: ignore[attr-defined]
        b = Boundary(self.name, model_id, self._secrets, deadlines, state)  # type: ignore[attr-defined]
        post = self._poster(b)
        sdk_stream = None
        try:
            with map_errors(b):
                async with asyncio.timeout_at(deadlines.next(state.started)):
                    sdk_stream = await post(json_body(body), cast_to=object, stream=True, stream_cls=self._stream_cls)
            async for event in relay(sdk_stream, consume, state, deadlines, map_errors, b,
                                     until_done=until_done, missing_end=missing_end):
                yield event
        finally:
            if sdk_stream is not None:
                await sdk_stream.close()


def lazy_module(name: str) -> Callable[[], Any]:
    """A function returning module ``name``, imported the first time it is called."""
    return partial(importlib.import_module, name)
