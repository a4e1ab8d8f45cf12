"""The OpenAI and Anthropic providers on Rhetor's HTTP transport under their SDK, with raw (dict) answers.

* The SDK client's HTTP client is the SDK's own ``DefaultAsyncHttpxClient`` on ``_http.Transport``: its pooled
  connection is used for the requests and closed with the provider, and the headers the typed SDK methods send
  still go out.
* Transport failures come out as Rhetor's errors: a reset, a refused connection, a close before or during the
  answer and an answer that is not HTTP are ``ProviderConnectionError`` (``MidStreamError`` once text was sent),
  and only a real timeout (the transport's read timeout) is a timeout. Checked live against the raw-asyncio fakes;
  the transport's own cases are in ``test_http_transport.py``.
* Answers and chunks of the wrong shape are ``MalformedChunk`` errors, as with the typed models.
"""

from __future__ import annotations

import json
import socket
import struct
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import anthropic
import openai
import pytest

from rhetor import errors
from rhetor.providers import _common, _http, _sdk_client
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


async def test_requests_go_through_rhetors_transport_under_the_sdks_client(vendor: Vendor, provider, upstream) -> None:
    p = provider(upstream.url)
    http = p._client._client  # the SDK client's httpx2 client
    assert isinstance(http, vendor.sdk.DefaultAsyncHttpxClient)
    transport = http._transport
    assert type(transport) is _http.Transport
    assert http.timeout == p._client.timeout  # the provider's timeouts reach the transport
    assert http.follow_redirects is True  # the SDK's defaults are kept
    assert (await p.complete(make_request())).text == "Hello, world!"
    await collect(p.stream(make_request()))
    assert len({r.peer for r in upstream.requests}) == 1  # one pooled connection for both
    (idle,) = [conn for conns in transport._idle.values() for conn in conns]
    await p.aclose()
    assert idle.closed and transport._open == 0 and p._client.is_closed()


async def test_a_provider_closed_before_any_request_opened_nothing(provider, upstream) -> None:
    p = provider(upstream.url)
    await p.aclose()
    assert p._client._client._transport._open == 0 and p._client.is_closed()
    assert upstream.requests == []


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
    assert err.message.endswith("connection failed (ConnectError)")


async def test_the_transports_read_timeout_between_chunks_is_a_timeout(provider, upstream) -> None:
    # after the first token only the total deadline (3 s) is ours; the transport's read timeout (= first_token)
    # fires first
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


# ------------------------------------------------------------------ answers that are not (complete) HTTP


@pytest.mark.parametrize(("raw", "name"), [
    (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 400\r\n\r\n{\"choices\"",
     "RemoteProtocolError"),
    (b"SSH-2.0-OpenSSH_9.2\r\n", "RemoteProtocolError"),
], ids=["closed-mid-body", "not-http"])
async def test_an_answer_that_is_not_complete_http_is_a_connection_error(provider, raw: bytes, name: str) -> None:
    async def answer(conn_reader: Any, conn_writer: Any) -> None:
        await conn_reader.readuntil(b"\r\n\r\n")
        conn_writer.write(raw)
        await conn_writer.drain()
        conn_writer.close()

    import asyncio
    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    try:
        p = provider(f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}")
        with pytest.raises(errors.ProviderError) as info:
            await p.complete(make_request())
        assert type(info.value) is errors.ProviderConnectionError and info.value.retryable
        assert info.value.message.endswith(f"connection failed ({name})")
        _, err = await stream_failure(p.stream(make_request()))
        assert type(err) is errors.ProviderConnectionError
    finally:
        server.close()


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


NOT_JSON_BODIES = [
    ("application/json", b'{"choices": [', "not JSON"),
    ("text/html", b"<html><body>502 Bad Gateway</body></html>", "not JSON"),
    ("application/json", b"", "not JSON"),
]


@pytest.mark.parametrize("vendor", ["openai", "anthropic"])
@pytest.mark.parametrize(("content_type", "body", "why"), NOT_JSON_BODIES, ids=["cut", "html", "empty"])
async def test_answer_that_is_not_json_is_malformed(make_provider, vendor: str, content_type: str, body: bytes,
                                                    why: str) -> None:
    """A 200 whose body is not JSON is a malformed answer (a retryable connection error), and the error shows
    the start of the body."""
    fake = (FakeOpenAI() if vendor == "openai" else FakeAnthropic()).start()
    try:
        fake.reply = lambda request, fault: Reply(200, {"content-type": content_type}, body)  # type: ignore[method-assign]
        p = (make_provider(OpenAIProvider, make_spec("openai", fake.url + "/v1"), {}) if vendor == "openai" else
             make_provider(AnthropicProvider, make_spec("anthropic", fake.url, api_key="env:K"), {"K": KEY}))
        with pytest.raises(errors.ProviderConnectionError, match=f"malformed response from upstream: .*{why}") as info:
            await p.complete(make_request())
        assert info.value.retryable and repr(body[:20])[2:-1] in info.value.message
    finally:
        fake.stop()


@pytest.mark.parametrize("vendor", ["openai", "anthropic"])
async def test_json_answer_with_another_content_type_is_read(make_provider, vendor: str) -> None:
    """Compatible servers that label their JSON ``text/plain`` are read by the body, not the label."""
    fake = (FakeOpenAI() if vendor == "openai" else FakeAnthropic()).start()
    try:
        answer = ({"choices": [{"message": {"content": "Hi"}, "finish_reason": "stop"}]} if vendor == "openai" else
                  {"content": [{"type": "text", "text": "Hi"}], "stop_reason": "end_turn"})
        fake.reply = lambda request, fault: Reply(  # type: ignore[method-assign]
            200, {"content-type": "text/plain; charset=utf-8"}, json.dumps(answer).encode())
        p = (make_provider(OpenAIProvider, make_spec("openai", fake.url + "/v1"), {}) if vendor == "openai" else
             make_provider(AnthropicProvider, make_spec("anthropic", fake.url, api_key="env:K"), {"K": KEY}))
        result = await p.complete(make_request())
        assert result.text == "Hi" and result.finish_reason in ("stop", "end_turn")
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
    memo = _sdk_client.lean_client(sdk)(api_key="k", base_url=base_url)
    try:
        url = _common.endpoint(client.base_url, path)
        assert url == str(client._prepare_url(path))  # noqa: SLF001 (the oracle)
        # the client providers build keeps the absolute URL's parse, and gives the SDK's own answer every time
        first = memo._prepare_url(url)
        assert memo._prepare_url(url) is first and str(first) == str(client._prepare_url(url)) == url
        assert str(memo._prepare_url(path)) == url and memo._prepare_url(url) is first  # a relative one: not kept
        other = url.replace("127.0.0.1", "127.0.0.2").replace("gateway.example", "other.example")
        assert str(memo._prepare_url(other)) == other and memo._prepare_url(other) is memo._prepare_url(other)
    finally:
        await client.close()
        await memo.close()


@pytest.mark.parametrize("sdk", [openai, anthropic], ids=["openai", "anthropic"])
async def test_the_unset_options_change_nothing_the_sdk_would_do(sdk: Any) -> None:
    """``unset_options`` hands the SDK its own ``NOT_GIVEN`` where it would deep-copy a ``NotGiven()`` default; the
    options model it builds must read the same in every field (the SDK tests ``isinstance(..., NotGiven)``)."""
    from importlib import import_module

    model = import_module(f"{sdk.__name__}._models").FinalRequestOptions
    common = {"method": "post", "url": "/v1/x", "json_data": None, "files": None, "content": b"{}"}
    default, ours = model.construct(**common), model.construct(**common, **_common.unset_options(sdk))
    assert set(type(default).model_fields) == set(type(ours).model_fields)
    for name in type(default).model_fields:
        a, b = getattr(default, name), getattr(ours, name)
        assert a == b or (isinstance(a, sdk.NotGiven) and isinstance(b, sdk.NotGiven)), name
    assert {name for name in _common.unset_options(sdk)} <= set(type(default).model_fields)


@pytest.mark.parametrize("sdk", [openai, anthropic], ids=["openai", "anthropic"])
async def test_sdk_post_hands_the_sdk_what_its_own_post_would(sdk: Any) -> None:
    """``SDKPost`` builds the options model once and copies it per request; the SDK's ``request`` must get what the
    SDK's own ``post`` hands it (the oracle, captured on the client), in every field, with no dict shared between
    requests."""
    client = (sdk.AsyncOpenAI if sdk is openai else sdk.AsyncAnthropic)(api_key="k", base_url="http://127.0.0.1:9")
    handed: list[tuple[Any, ...]] = []

    async def capture(cast_to: Any, options: Any, *, stream: bool = False, stream_cls: Any = None) -> None:
        handed.append((cast_to, options, stream, stream_cls))

    client.request = capture  # what post() hands the SDK's request(), instead of sending it
    options = {**_common.unset_options(sdk), **({"security": {"bearer_auth": True}} if sdk is openai else {})}
    url = "http://127.0.0.1:9/v1/x"
    post = _common.SDKPost(sdk, client, url, options)
    try:
        for content, kwargs in ((b'{"a": 1}', {"cast_to": bytes}),
                                (b'{"b": 2}', {"cast_to": object, "stream": True, "stream_cls": sdk.AsyncStream})):
            await client.post(url, content=content, options=options, **kwargs)
            await post(content, **kwargs)
            (cast_a, want, *rest_a), (cast_b, got, *rest_b) = handed[-2], handed[-1]
            assert (cast_a, *rest_a) == (cast_b, *rest_b)  # cast_to, stream, stream_cls
            assert type(got) is type(want) and got.model_fields_set == want.model_fields_set
            for name in type(want).model_fields:
                a, b = getattr(want, name), getattr(got, name)
                assert a == b or (isinstance(a, sdk.NotGiven) and isinstance(b, sdk.NotGiven)), name
            assert got.content == content and got.url == url and got.method == "post"
        first, second = post.options(b"1"), post.options(b"2")
        shared = [name for name, value in vars(first).items() if isinstance(value, dict | list)]
        assert "params" in shared and all(getattr(first, n) is not getattr(second, n) for n in shared)
        first.params["api-version"] = "x"  # a request's options changed in place change no other request's
        assert post.options(b"3").params == {} and second.content == b"2"
    finally:
        await client.close()


def _same_request(want: Any, got: Any, content: bytes) -> None:
    """``got`` is the request the SDK built (``want``) in every field httpx2 and the transport read."""
    assert got.__class__ is want.__class__ and sorted(vars(got)) == sorted(vars(want))
    assert (got.method, str(got.url), got.headers.raw, got.extensions) == (
        want.method, str(want.url), want.headers.raw, want.extensions)
    assert got.content == want.content == content
    assert got.stream.__class__ is want.stream.__class__ and list(got.stream) == list(want.stream)


@pytest.mark.parametrize("sdk", [openai, anthropic], ids=["openai", "anthropic"])
@pytest.mark.parametrize("base_url", ["http://127.0.0.1:9/v1", "http://127.0.0.1:9/v1?api-version=2024-06-01"])
async def test_a_kept_request_build_is_the_sdks_own_with_the_new_body(sdk: Any, base_url: str) -> None:
    """The provider's client hands out a copy of its last request build, with the new body, when nothing else
    changed; it must be what the stock SDK client builds for the same options, attempt and client state, and
    share nothing mutable between requests."""
    cls = sdk.AsyncOpenAI if sdk is openai else sdk.AsyncAnthropic
    stock, lean = cls(api_key="k", base_url=base_url), _sdk_client.lean_client(cls)(api_key="k", base_url=base_url)
    options = {**_common.unset_options(sdk), **({"security": {"bearer_auth": True}} if sdk is openai else {})}
    path = "/chat/completions" if sdk is openai else "/v1/messages"
    url = _common.endpoint(stock.base_url, path)
    posts = (_common.SDKPost(sdk, stock, url, options), _common.SDKPost(sdk, lean, url, options))

    def compare(content: bytes, retries: int = 0) -> Any:
        want = stock._build_request(posts[0].options(content), retries_taken=retries)  # noqa: SLF001 (the oracle)
        got = lean._build_request(posts[1].options(content), retries_taken=retries)  # noqa: SLF001
        _same_request(want, got, content)
        return got

    try:
        for retries in (0, 0, 1, 1, 0):
            for content in (b'{"a": 1}', b'{"bb": "22"}', b"", b'{"a": 1}'):
                compare(content, retries)
        first, second = compare(b"1"), compare(b"22")
        assert first.url is second.url  # the kept build was copied, not rebuilt
        assert first.headers is not second.headers and first.extensions is not second.extensions
        first.headers["x-changed"] = "1"  # a request changed in place changes no later request
        first.extensions["timeout"]["read"] = 1.0
        compare(b"333")
        for change in (lambda c: setattr(c, "api_key", "k2"),  # what changes the headers or the timeout
                       lambda c: c._custom_headers.update({"X-Extra": "1"}),  # noqa: SLF001
                       lambda c: setattr(c, "timeout", 7.0),
                       lambda c: c._client.headers.update({"X-Client": "2"})):  # noqa: SLF001
            compare(b"0")  # the build kept is this attempt's: the change must be noticed
            change(stock)
            change(lean)
            compare(b"4")
            compare(b"55", 1)
        kept = compare(b"0")  # the build kept is this attempt's, made with no cookies
        for client in (stock, lean):  # with cookies, the jar's header on each copy (it depends on the jar)
            client._client.cookies.set("session", "s1", domain="127.0.0.1")  # noqa: SLF001
        assert compare(b"6").headers.get("cookie") == "session=s1"
        assert compare(b"6").url is kept.url  # a copy of the kept build, with the jar's header
        compare(b"8", 1)  # built with cookies: not kept (its Cookie header would go stale)
        for client in (stock, lean):
            client._client.cookies.set("session", "s2", domain="127.0.0.1")  # noqa: SLF001
        assert compare(b"99", 1).headers.get("cookie") == "session=s2"  # the attempt built with s1 was not kept
        assert compare(b"77").headers.get("cookie") == "session=s2"
    finally:
        await stock.close()
        await lean.close()


@pytest.mark.parametrize("sdk", [openai, anthropic], ids=["openai", "anthropic"])
async def test_the_idempotency_key_is_the_sdks_own_only_where_a_header_sends_it(sdk: Any) -> None:
    """The SDK makes a ``uuid4`` key for every request, sent only in an idempotency header, which neither SDK sets:
    the provider's client then hands out one fixed key. With a header, keys are the SDK's own, one per request,
    and each goes out in its request's header (the kept build is not reused across keys)."""
    cls = sdk.AsyncOpenAI if sdk is openai else sdk.AsyncAnthropic
    lean = _sdk_client.lean_client(cls)(api_key="k", base_url="http://127.0.0.1:9")
    options = {**_common.unset_options(sdk), **({"security": {"bearer_auth": True}} if sdk is openai else {})}
    post = _common.SDKPost(sdk, lean, "http://127.0.0.1:9/v1/x", options)
    try:
        assert not lean._idempotency_header  # noqa: SLF001 (what the fixed key relies on)
        assert lean._idempotency_key() == lean._idempotency_key()  # noqa: SLF001
        lean._idempotency_header = "Idempotency-Key"  # noqa: SLF001
        first, second = lean._idempotency_key(), lean._idempotency_key()  # noqa: SLF001
        assert first != second and first.startswith("stainless-python-retry-")
        for key in (first, second, first):
            request_options = post.options(b'{"a": 1}')
            request_options.idempotency_key = key
            assert lean._build_request(request_options).headers["Idempotency-Key"] == key  # noqa: SLF001
    finally:
        await lean.close()


@pytest.mark.parametrize("sdk", [openai, anthropic], ids=["openai", "anthropic"])
async def test_sdk_post_answer_asks_the_sdk_for_the_response_as_httpx2_read_it(sdk: Any) -> None:
    """``SDKPost.answer`` asks the SDK's ``request`` for ``httpx2.Response`` (handed back unwrapped, after retries and
    status errors) and returns its body; the SDK itself hands that cast back as the very response it received."""
    import httpx2

    client = (sdk.AsyncOpenAI if sdk is openai else sdk.AsyncAnthropic)(api_key="k", base_url="http://127.0.0.1:9")
    options = {**_common.unset_options(sdk), **({"security": {"bearer_auth": True}} if sdk is openai else {})}
    post = _common.SDKPost(sdk, client, "http://127.0.0.1:9/v1/x", options)
    request = httpx2.Request("POST", "http://127.0.0.1:9/v1/x")
    read = httpx2.Response(200, content=b'{"ok": true}', request=request)
    try:
        unwrapped = await client._process_response(  # noqa: SLF001 (what the SDK does with the cast)
            cast_to=httpx2.Response, options=post.options(b"{}"), response=read, stream=False, stream_cls=None)
        assert unwrapped is read
        handed: list[tuple[Any, ...]] = []

        async def capture(cast_to: Any, options: Any, *, stream: bool = False, stream_cls: Any = None) -> Any:
            handed.append((cast_to, options.content, stream, stream_cls))
            return read

        client.request = capture
        assert await post.answer(b'{"q": 1}') == b'{"ok": true}'
        assert handed == [(httpx2.Response, b'{"q": 1}', False, None)]
    finally:
        await client.close()


async def test_the_http_client_keeps_the_parse_of_the_absolute_url_it_is_handed() -> None:
    """The OpenAI SDK hands httpx2 its prepared URL as a string; the client ``_http.client`` builds keeps its parse
    (and only an absolute one: a relative URL depends on the client's base URL)."""
    http = _http.client(openai, 2.0)
    try:
        url = "http://127.0.0.1:9/v1/chat/completions?api-version=1"
        first = http._merge_url(url)
        assert http._merge_url(url) is first and str(http.build_request("POST", url).url) == url
        http.base_url = "http://127.0.0.1:9/base/"
        assert str(http.build_request("POST", "relative").url) == "http://127.0.0.1:9/base/relative"
        http.base_url = "http://127.0.0.1:9/elsewhere/"
        assert str(http.build_request("POST", "relative").url) == "http://127.0.0.1:9/elsewhere/relative"
        assert http._merge_url(url) is first
    finally:
        await http.aclose()


@pytest.mark.parametrize("sdk", [openai, anthropic], ids=["openai", "anthropic"])
async def test_the_http_client_keeps_its_last_header_merge_and_answers_as_httpx2_would(sdk: Any) -> None:
    """``_merge_headers`` keeps its last merge; whatever it is handed, in whatever order, and however the client's
    headers or an earlier answer were changed since, it answers what httpx2's own merge does (the oracle), and never
    the same object twice."""
    import httpx2

    http = _http.client(sdk, 2.0)
    oracle = httpx2.AsyncClient._merge_headers

    def check(given: Any) -> httpx2.Headers:
        got, want = http._merge_headers(given), oracle(http, given)
        assert got.raw == want.raw and got.encoding == want.encoding
        return got

    try:
        sdk_headers = [("Accept", "application/json"), ("Content-Type", "application/json"),
                       ("X-Stainless-Retry-Count", "0"), ("Authorization", "Bearer k")]
        first = check(sdk_headers)
        again = check(list(sdk_headers))
        assert again is not first and again.raw == first.raw
        again["X-Mutated"] = "1"  # an answer changed by its caller changes nothing kept
        assert "x-mutated" not in check(sdk_headers)
        retried = check([*sdk_headers[:2], ("X-Stainless-Retry-Count", "1"), sdk_headers[3]])
        assert retried["x-stainless-retry-count"] == "1"
        assert check(list(reversed(sdk_headers))).raw != first.raw  # order is part of the answer
        assert check(httpx2.Headers(sdk_headers)).raw == first.raw  # the Anthropic SDK hands over Headers
        headers = httpx2.Headers([*sdk_headers, ("X-Fresh", "1")])
        check(headers)
        headers["Authorization"] = "Bearer other"  # the same object, changed in place
        assert check(headers)["authorization"] == "Bearer other"
        http.headers["X-Client"] = "1"  # the client's own headers, changed in place
        assert check(sdk_headers)["x-client"] == "1"
        http.headers = {"Accept": "text/plain"}  # ... and replaced
        assert check(sdk_headers)["accept"] == "application/json"
        assert "x-client" not in check(sdk_headers)
        assert check(None).raw == oracle(http, None).raw and check({"A": "b"})["a"] == "b"
    finally:
        await http.aclose()
