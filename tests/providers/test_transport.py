"""The OpenAI and Anthropic providers on their SDK's aiohttp transport, with raw (dict) answers.

* The SDK client's HTTP client is the SDK's own ``DefaultAioHttpClient``: its aiohttp session is used for the
  requests and closed with the provider, and the headers the typed SDK methods send still go out.
* Transport failures are classified by the aiohttp exception behind the SDK's error. The transport the SDKs
  vendor maps aiohttp's exceptions onto httpx2's lossily (the OpenAI copy turns every
  ``ClientConnectionError``, a reset or a refused connection included, into ``httpx2.ConnectTimeout``), so a
  reset must still come out as a ``ProviderConnectionError``, and only a real timeout as a timeout. Checked
  live against the raw-asyncio fakes (RST before the answer and mid-stream, refused connections, the SDK's
  socket read timeout) and, for the exceptions a loopback fake cannot provoke, with an aiohttp session
  stand-in behind the SDK's real transport.
* Answers and chunks of the wrong shape are ``MalformedChunk`` errors, as with the typed models.
"""

from __future__ import annotations

import errno
import json
import socket
import struct
import time
import types
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import anthropic
import openai
import pytest

from rhetor import errors
from rhetor.providers import _common
from rhetor.providers.anthropic import AnthropicProvider
from rhetor.providers.base import Provider
from rhetor.providers.openai import OpenAIProvider
from rhetor.types import Usage
from tests.fakes import FakeAnthropic, FakeOpenAI, FakeUpstream, Fault, Frame, Reply
from tests.fakes.harness import KEY, collect, free_port, make_request, make_spec, stream_failure

pytestmark = pytest.mark.asyncio


@dataclass(frozen=True)
class Vendor:
    kind: str
    cls: type[Provider]
    sdk: Any
    path: str  # the base URL's path on the fake
    env_var: str
    user_agent: str
    first_chunk: bytes  # one SSE event carrying the text "Hello"


VENDORS = {
    "openai": Vendor("openai", OpenAIProvider, openai, "/v1", "OPENAI_API_KEY", "AsyncOpenAI/Python",
                     b'data: {"id":"c","object":"chat.completion.chunk","choices":[{"index":0,'
                     b'"delta":{"content":"Hello"},"finish_reason":null}]}\n\n'),
    "anthropic": Vendor("anthropic", AnthropicProvider, anthropic, "", "ANTHROPIC_API_KEY", "AsyncAnthropic/Python",
                        b'event: message_start\ndata: {"type":"message_start","message":{"id":"m","type":"message",'
                        b'"role":"assistant","content":[],"usage":{"input_tokens":5,"output_tokens":1}}}\n\n'
                        b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
                        b'"delta":{"type":"text_delta","text":"Hello"}}\n\n'),
}


@pytest.fixture(params=sorted(VENDORS))
def vendor(request: pytest.FixtureRequest) -> Vendor:
    return VENDORS[request.param]


@pytest.fixture
def upstream(vendor: Vendor) -> Iterator[FakeUpstream]:
    fake = (FakeOpenAI if vendor.kind == "openai" else FakeAnthropic)().start()
    yield fake
    fake.stop()


@pytest.fixture
def provider(vendor: Vendor, make_provider) -> Callable[..., Provider]:  # type: ignore[no-untyped-def]
    def make(base_url: str, **options: float) -> Provider:
        spec = make_spec(vendor.kind, base_url + vendor.path, api_key=f"env:{vendor.env_var}", **options)
        return make_provider(vendor.cls, spec, {vendor.env_var: KEY})
    return make


# ------------------------------------------------------------------ the transport and what goes on the wire


async def test_requests_go_through_the_sdks_aiohttp_transport(vendor: Vendor, provider, upstream) -> None:
    p = provider(upstream.url)
    http = p._client._client  # the SDK client's httpx2 client
    assert isinstance(http, vendor.sdk.DefaultAioHttpClient)
    transport = http._transport
    assert type(transport).__module__ == f"{vendor.kind}._vendor.httpx_aiohttp.transport"
    assert http.timeout == p._client.timeout  # the provider's timeouts reach the transport
    assert (await p.complete(make_request())).text == "Hello, world!"
    await collect(p.stream(make_request()))
    session = transport.client
    assert isinstance(session, aiohttp.ClientSession) and not session.closed
    assert len({r.peer for r in upstream.requests}) == 1  # one pooled aiohttp connection for both
    await p.aclose()
    assert session.closed and p._client.is_closed()


async def test_a_provider_closed_before_any_request_has_no_session(provider, upstream) -> None:
    p = provider(upstream.url)
    await p.aclose()
    assert p._client._client._transport.client is None and p._client.is_closed()


@pytest.mark.parametrize("streaming", [False, True], ids=["complete", "stream"])
async def test_the_typed_methods_headers_still_go_out(vendor: Vendor, provider, upstream, streaming: bool) -> None:
    p = provider(upstream.url)
    if streaming:
        await collect(p.stream(make_request()))
    else:
        await p.complete(make_request())
    headers = upstream.last.headers
    assert headers["authorization"] == f"Bearer {KEY}"
    assert headers["user-agent"].startswith(vendor.user_agent)
    assert headers["content-type"] == "application/json" and headers["accept"] == "application/json"
    assert headers["x-stainless-retry-count"] == "0" and headers["x-stainless-read-timeout"] == "1.0"
    assert headers["x-stainless-lang"] == "python" and headers["x-stainless-async"].startswith("async:")
    if vendor.kind == "anthropic":
        assert headers["anthropic-version"] == "2026-10-21"
    assert upstream.last.json.get("stream") is (True if streaming else None)


async def test_no_admin_key_is_sent_even_when_the_environment_has_one(make_provider, monkeypatch) -> None:
    monkeypatch.setenv("OPENAI_ADMIN_KEY", "sk-admin-NEVER-SENT")
    fake = FakeOpenAI().start()
    try:
        spec = make_spec("openai", fake.url + "/v1", api_key="env:OPENAI_API_KEY")
        p = make_provider(OpenAIProvider, spec, {"OPENAI_API_KEY": KEY})
        await p.complete(make_request())
        await collect(p.stream(make_request()))
        assert [r.headers["authorization"] for r in fake.requests] == [f"Bearer {KEY}"] * 2
    finally:
        fake.stop()


# ------------------------------------------------------------------ live transport faults (raw-asyncio fakes)


class _ResetOnClose:
    """A fake's ``StreamWriter`` whose ``close()`` resets the connection (RST) instead of ending it (FIN)."""

    def __init__(self, writer: Any) -> None:
        self._writer = writer

    def __getattr__(self, name: str) -> Any:
        return getattr(self._writer, name)

    def close(self) -> None:
        sock = self._writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self._writer.transport.abort()


def reset_when_cut(fake: FakeUpstream) -> None:
    """``Fault(cut_after=N)`` on ``fake`` resets the connection after N text chunks instead of closing it."""
    answer = fake._answer

    async def _answer(request: Any, fault: Fault, writer: Any) -> bool:
        return await answer(request, fault, _ResetOnClose(writer))

    fake._answer = _answer  # type: ignore[method-assign]


@pytest.mark.parametrize("streaming", [False, True], ids=["complete", "stream"])
async def test_reset_before_any_answer_is_a_connection_error(provider, upstream, streaming: bool) -> None:
    upstream.fail_next(Fault(reset=True))
    if streaming:
        deltas, err = await stream_failure(provider(upstream.url).stream(make_request()))
        assert deltas == []
    else:
        with pytest.raises(errors.ProviderError) as info:
            await provider(upstream.url).complete(make_request())
        err = info.value
    # the OpenAI SDK's copy of the transport reports this reset as httpx2.ConnectTimeout (APITimeoutError)
    assert type(err) is errors.ProviderConnectionError and err.retryable and err.upstream_status is None
    assert "connection failed" in err.message


async def test_reset_mid_stream_is_mid_stream_with_the_partial_text(provider, upstream) -> None:
    reset_when_cut(upstream)
    upstream.fail_next(Fault(cut_after=2))
    deltas, err = await stream_failure(provider(upstream.url).stream(make_request("m")))
    assert deltas == ["Hello", ", "]
    assert isinstance(err, errors.MidStreamError) and err.partial_text == "Hello, "
    assert err.details["cause"] == "provider-connection" and err.details["cause_retryable"] is True


@pytest.mark.parametrize("streaming", [False, True], ids=["complete", "stream"])
async def test_connection_refused_is_a_connection_error(provider, streaming: bool) -> None:
    p = provider(f"http://127.0.0.1:{free_port()}")
    if streaming:
        _, err = await stream_failure(p.stream(make_request()))
    else:
        with pytest.raises(errors.ProviderError) as info:
            await p.complete(make_request())
        err = info.value
    assert type(err) is errors.ProviderConnectionError and err.retryable
    assert err.message.endswith("connection failed (ClientConnectorError)")


async def test_the_sdks_socket_read_timeout_between_chunks_is_a_timeout(provider, upstream) -> None:
    # after the first token only the total deadline (3 s) is ours; aiohttp's sock_read (= first_token) fires first
    upstream.fail_next(Fault(chunk_delay=0.8))
    started = time.perf_counter()
    deltas, err = await stream_failure(provider(upstream.url, first_token=0.3, total=3.0).stream(make_request()))
    assert deltas == ["Hello"]
    assert isinstance(err, errors.MidStreamError) and err.details["cause"] == "provider-timeout"
    assert time.perf_counter() - started < 0.75


async def test_a_retried_reset_then_succeeds(vendor: Vendor, make_provider, upstream) -> None:
    spec = make_spec(vendor.kind, upstream.url + vendor.path, api_key=f"env:{vendor.env_var}", max_retries=1,
                     first_token=3.0)
    p = make_provider(vendor.cls, spec, {vendor.env_var: KEY})
    upstream.fail_next(Fault(reset=True))
    assert (await p.complete(make_request())).text == "Hello, world!"
    assert len(upstream.requests) == 2


# ------------------------------------------------------------------ aiohttp exceptions behind the SDK's transport


class _Content:
    def __init__(self, chunks: list[bytes], exc: BaseException | None) -> None:
        self.chunks, self.exc = chunks, exc

    async def iter_chunked(self, n: int) -> AsyncIterator[bytes]:
        for chunk in self.chunks:
            yield chunk
        if self.exc is not None:
            raise self.exc


class _Response:
    """What the transport reads of an ``aiohttp.ClientResponse``: an SSE body that fails after ``chunks``."""

    status = 200
    reason = "OK"
    raw_headers = ((b"content-type", b"text/event-stream"),)

    def __init__(self, chunks: list[bytes], exc: BaseException | None) -> None:
        self.content = _Content(chunks, exc)

    async def __aexit__(self, *args: Any) -> None:
        return None


class _Session:
    """Stands in for the transport's ``aiohttp.ClientSession``: each request raises ``before`` or answers."""

    def __init__(self, before: BaseException | None, response: _Response | None = None) -> None:
        self.before, self.response = before, response

    def request(self, **kwargs: Any) -> Any:
        session = self

        class _Pending:
            async def __aenter__(self) -> _Response:
                if session.before is not None:
                    raise session.before
                assert session.response is not None
                return session.response

        return _Pending()


def _refused() -> aiohttp.ClientConnectorError:
    key = types.SimpleNamespace(host="127.0.0.1", port=9, ssl=True)
    return aiohttp.ClientConnectorError(key, ConnectionRefusedError(errno.ECONNREFUSED, "Connect call failed"))


TIMEOUT, CONNECTION = errors.ProviderTimeoutError, errors.ProviderConnectionError
AIOHTTP_FAILURES: list[tuple[str, Callable[[], BaseException], type[errors.ProviderError]]] = [
    ("ServerDisconnectedError", aiohttp.ServerDisconnectedError, CONNECTION),
    ("ClientOSError-ECONNRESET", lambda: aiohttp.ClientOSError(errno.ECONNRESET, "Connection reset by peer"),
     CONNECTION),
    ("ClientConnectionResetError", lambda: aiohttp.ClientConnectionResetError("Connection lost"), CONNECTION),
    ("ClientConnectorError-refused", _refused, CONNECTION),
    ("ClientPayloadError", lambda: aiohttp.ClientPayloadError("Response payload is not completed"), CONNECTION),
    ("SocketTimeoutError", lambda: aiohttp.SocketTimeoutError("Timeout on reading data from socket"), TIMEOUT),
    ("ConnectionTimeoutError", lambda: aiohttp.ConnectionTimeoutError("Connection timeout to host"), TIMEOUT),
]


def _behind_the_transport(p: Provider, session: _Session) -> None:
    p._client._client._transport.get_client = lambda: session


@pytest.mark.parametrize(("name", "make_exc", "cls"), AIOHTTP_FAILURES, ids=[c[0] for c in AIOHTTP_FAILURES])
async def test_aiohttp_failure_before_the_answer(provider, name: str, make_exc: Callable[[], BaseException],
                                                 cls: type[errors.ProviderError]) -> None:
    p = provider("http://127.0.0.1:9")
    _behind_the_transport(p, _Session(make_exc()))
    with pytest.raises(errors.ProviderError) as info:
        await p.complete(make_request())
    assert type(info.value) is cls and info.value.retryable
    if cls is CONNECTION:
        assert info.value.message.endswith(f"connection failed ({name.split('-')[0]})")
    _behind_the_transport(p, _Session(make_exc()))
    _, err = await stream_failure(p.stream(make_request()))
    assert type(err) is cls


@pytest.mark.parametrize(("name", "make_exc", "cls"), AIOHTTP_FAILURES, ids=[c[0] for c in AIOHTTP_FAILURES])
async def test_aiohttp_failure_mid_stream(vendor: Vendor, provider, name: str, make_exc: Callable[[], BaseException],
                                          cls: type[errors.ProviderError]) -> None:
    p = provider("http://127.0.0.1:9")
    _behind_the_transport(p, _Session(None, _Response([vendor.first_chunk], make_exc())))
    deltas, err = await stream_failure(p.stream(make_request()))
    assert deltas == ["Hello"]
    assert isinstance(err, errors.MidStreamError) and err.partial_text == "Hello"
    assert err.details["cause"] == cls.code and err.details["cause_retryable"] is True


# ------------------------------------------------------------------ answers of the wrong shape


def _serve_json(upstream: FakeUpstream, payload: Any) -> None:
    upstream.reply = lambda request, fault: Reply(200, {"content-type": "application/json"},  # type: ignore[method-assign]
                                                  json.dumps(payload).encode())


def _serve_sse(upstream: FakeUpstream, *events: bytes) -> None:
    upstream.reply = lambda request, fault: Reply(200, {"content-type": "text/event-stream"},  # type: ignore[method-assign]
                                                  frames=[Frame(e) for e in events])


OPENAI_BAD_ANSWERS = [
    ({"id": "x", "object": "chat.completion"}, "no choices"),
    ({"choices": []}, "no choices"),
    ({"choices": "nope"}, "no choices"),
    ({"choices": ["nope"]}, "no choices"),
    ([1, 2], "no choices"),
    ({"choices": [{"message": {"content": 42}, "finish_reason": "stop"}]}, "not a string"),
]


@pytest.mark.parametrize(("payload", "why"), OPENAI_BAD_ANSWERS, ids=[str(i) for i in range(len(OPENAI_BAD_ANSWERS))])
async def test_openai_answer_of_the_wrong_shape_is_malformed(make_provider, payload: Any, why: str) -> None:
    fake = FakeOpenAI().start()
    try:
        _serve_json(fake, payload)
        p = make_provider(OpenAIProvider, make_spec("openai", fake.url + "/v1"), {})
        with pytest.raises(errors.ProviderConnectionError, match=f"malformed response from upstream: .*{why}"):
            await p.complete(make_request())
    finally:
        fake.stop()


async def test_openai_answer_with_nulls_is_read_leniently(make_provider) -> None:
    fake = FakeOpenAI().start()
    try:
        _serve_json(fake, {"choices": [{"message": {"content": None}, "finish_reason": None}], "usage": None})
        p = make_provider(OpenAIProvider, make_spec("openai", fake.url + "/v1"), {})
        result = await p.complete(make_request())
        assert (result.text, result.usage, result.finish_reason) == ("", Usage(), None)
    finally:
        fake.stop()


OPENAI_BAD_CHUNKS = [
    (b"data: [1, 2]\n\n", "not an object"),
    (b"data: 7\n\n", "not an object"),
    (b'data: {"id": "x"}\n\n', "no choices"),
    (b'data: {"choices": [3]}\n\n', "not a list of objects"),
    (b'data: {"choices": [{"delta": {"content": ["a"]}}]}\n\n', "not a string"),
]


@pytest.mark.parametrize(("event", "why"), OPENAI_BAD_CHUNKS, ids=[str(i) for i in range(len(OPENAI_BAD_CHUNKS))])
async def test_openai_chunk_of_the_wrong_shape_is_malformed(make_provider, event: bytes, why: str) -> None:
    fake = FakeOpenAI().start()
    try:
        _serve_sse(fake, VENDORS["openai"].first_chunk, event, b"data: [DONE]\n\n")
        p = make_provider(OpenAIProvider, make_spec("openai", fake.url + "/v1"), {})
        deltas, err = await stream_failure(p.stream(make_request()))
        assert deltas == ["Hello"]
        assert isinstance(err, errors.MidStreamError) and err.partial_text == "Hello"
        assert "malformed" in err.message and why in err.message
    finally:
        fake.stop()


ANTHROPIC_BAD_ANSWERS = [
    ({"id": "m", "type": "message"}, "no content"),
    ([1], "no content"),
    ({"content": "Hello"}, "not a list"),
    ({"content": [{"type": "text", "text": 5}]}, "not a string"),
]


@pytest.mark.parametrize(("payload", "why"), ANTHROPIC_BAD_ANSWERS,
                         ids=[str(i) for i in range(len(ANTHROPIC_BAD_ANSWERS))])
async def test_anthropic_answer_of_the_wrong_shape_is_malformed(make_provider, payload: Any, why: str) -> None:
    fake = FakeAnthropic().start()
    try:
        _serve_json(fake, payload)
        p = make_provider(AnthropicProvider, make_spec("anthropic", fake.url, api_key="env:K"), {"K": KEY})
        with pytest.raises(errors.ProviderConnectionError, match=f"malformed response from upstream: .*{why}"):
            await p.complete(make_request())
    finally:
        fake.stop()


async def test_anthropic_answer_skips_other_blocks_and_odd_usage(make_provider) -> None:
    fake = FakeAnthropic().start()
    try:
        _serve_json(fake, {"content": [{"type": "thinking", "thinking": "hm"}, {"type": "text", "text": "Hi"}, 3,
                                       {"type": "text", "text": None}],
                           "usage": {"input_tokens": 4, "output_tokens": "2"}, "stop_reason": "end_turn"})
        p = make_provider(AnthropicProvider, make_spec("anthropic", fake.url, api_key="env:K"), {"K": KEY})
        result = await p.complete(make_request())
        assert (result.text, result.usage, result.finish_reason) == ("Hi", Usage(input_tokens=4), "end_turn")
    finally:
        fake.stop()


ANTHROPIC_BAD_EVENTS = [
    (b'event: content_block_delta\ndata: {"index": 0}\n\n', "no type"),
    (b"event: content_block_delta\ndata: [1]\n\n", "no type"),
    (b"event: content_block_delta\ndata: null\n\n", "no type"),
    (b'event: content_block_delta\ndata: {"type":"content_block_delta","delta":{"type":"text_delta","text":1}}\n\n',
     "not a string"),
]


@pytest.mark.parametrize(("event", "why"), ANTHROPIC_BAD_EVENTS, ids=[str(i) for i in range(len(ANTHROPIC_BAD_EVENTS))])
async def test_anthropic_event_of_the_wrong_shape_is_malformed(make_provider, event: bytes, why: str) -> None:
    fake = FakeAnthropic().start()
    try:
        _serve_sse(fake, VENDORS["anthropic"].first_chunk, event,
                   b'event: message_stop\ndata: {"type":"message_stop"}\n\n')
        p = make_provider(AnthropicProvider, make_spec("anthropic", fake.url, api_key="env:K"), {"K": KEY})
        deltas, err = await stream_failure(p.stream(make_request()))
        assert deltas == ["Hello"]
        assert isinstance(err, errors.MidStreamError) and err.partial_text == "Hello"
        assert err.usage == Usage(input_tokens=5, output_tokens=1)
        assert "malformed" in err.message and why in err.message
    finally:
        fake.stop()


async def test_anthropic_pings_and_unknown_events_are_skipped(make_provider) -> None:
    fake = FakeAnthropic().start()
    try:
        _serve_sse(fake, b'event: ping\ndata: {"type": "ping"}\n\n', VENDORS["anthropic"].first_chunk,
                   b'event: future_event\ndata: {"type": "future_event"}\n\n',
                   b'event: message_delta\ndata: {"type":"message_delta","delta":{"stop_reason":"end_turn"},'
                   b'"usage":{"output_tokens":3,"input_tokens":null}}\n\n',
                   b'event: message_stop\ndata: {"type":"message_stop"}\n\n')
        p = make_provider(AnthropicProvider, make_spec("anthropic", fake.url, api_key="env:K"), {"K": KEY})
        deltas, end = await collect(p.stream(make_request()))
        assert deltas == ["Hello"]
        assert end.usage == Usage(input_tokens=5, output_tokens=3) and end.finish_reason == "end_turn"
    finally:
        fake.stop()


@pytest.mark.parametrize(
    "base_url",
    ["http://127.0.0.1:9/v1", "http://127.0.0.1:9/v1/", "https://gateway.example/proxy/openai/v1",
     "http://127.0.0.1:9", "http://[::1]:9/a%20b/", "http://127.0.0.1:9/v1?api-version=2024-06-01"],
)
@pytest.mark.parametrize(("sdk", "path"), [(openai.AsyncOpenAI, "/chat/completions"),
                                           (anthropic.AsyncAnthropic, "/v1/messages")])
async def test_the_endpoint_url_is_the_one_the_sdk_would_build(sdk: Any, path: str, base_url: str) -> None:
    """Providers hand the SDK an absolute URL made once; it must be exactly the SDK's own join of base URL and path
    (the fakes check the path of every request; this also covers prefixes, missing slashes and escapes)."""
    client = sdk(api_key="k", base_url=base_url)
    try:
        assert _common.endpoint(client.base_url, path) == str(client._prepare_url(path))  # noqa: SLF001 (the oracle)
    finally:
        await client.close()

