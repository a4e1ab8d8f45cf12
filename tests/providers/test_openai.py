"""``kind: openai`` through the official SDK against a wire-faithful fake on loopback HTTP."""

from __future__ import annotations

import email.utils
import json
import time

import httpx2
import pytest

from rhetor import errors
from rhetor.providers import build_provider
from rhetor.providers.base import Availability
from rhetor.providers.openai import OpenAIProvider
from rhetor.types import Usage
from tests.fakes import FakeOpenAI, Fault
from tests.fakes.harness import KEY, collect, free_port, make_request, make_spec, stream_failure
from tests.fakes.openai_server import CONTEXT_TOO_LONG

pytestmark = pytest.mark.asyncio

ENV = {"OPENAI_API_KEY": KEY}
EXPECTED_USAGE = Usage(input_tokens=32, output_tokens=7, cache_read_tokens=10)  # 42 prompt - 10 cached


@pytest.fixture
def provider(openai_upstream: FakeOpenAI, make_provider):  # type: ignore[no-untyped-def]
    def make(**timeouts: float) -> OpenAIProvider:
        spec = make_spec("openai", openai_upstream.url + "/v1", api_key="env:OPENAI_API_KEY", **timeouts)
        return make_provider(OpenAIProvider, spec, ENV)
    return make


# ------------------------------------------------------------------ happy paths and request mapping


async def test_complete_maps_request_and_reports_usage(provider, openai_upstream: FakeOpenAI) -> None:
    result = await provider().complete(make_request("gpt-test", temperature=0.3, stop=("END",), max_tokens=64))
    assert result.text == "Hello, world!"
    assert result.usage == EXPECTED_USAGE
    assert result.finish_reason == "stop"
    sent = openai_upstream.last
    assert sent.path == "/v1/chat/completions"
    assert sent.headers["authorization"] == f"Bearer {KEY}"
    assert sent.headers["content-type"] == "application/json"  # the SDK's, with the body Rhetor encodes
    assert sent.json == {"model": "gpt-test", "max_tokens": 64, "temperature": 0.3, "stop": ["END"],
                         "messages": [{"role": "system", "content": "Be brief."},
                                      {"role": "user", "content": "Say hello"}]}


async def test_complete_leaves_out_unset_temperature_and_stop(provider, openai_upstream: FakeOpenAI) -> None:
    await provider().complete(make_request(system=None))
    body = openai_upstream.last.json
    assert "temperature" not in body and "stop" not in body and "max_completion_tokens" not in body
    assert body["messages"] == [{"role": "user", "content": "Say hello"}]


@pytest.mark.parametrize("one_write", [False, True], ids=["frame-by-frame", "one-write"])
async def test_stream_yields_deltas_then_usage_from_the_final_chunk(provider, openai_upstream: FakeOpenAI,
                                                                   one_write: bool) -> None:
    openai_upstream.fail_next(Fault(one_write=one_write))  # many events in one read, or one at a time
    deltas, end = await collect(provider().stream(make_request("gpt-test")))
    assert deltas == ["Hello", ", ", "world", "!"]
    assert end.usage == EXPECTED_USAGE
    assert end.finish_reason == "stop"
    body = openai_upstream.last.json
    assert openai_upstream.last.headers["content-type"] == "application/json"
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert body["max_tokens"] == 64


async def test_finish_reason_is_passed_through(provider, openai_upstream: FakeOpenAI) -> None:
    openai_upstream.finish_reason = "length"
    assert (await provider().complete(make_request())).finish_reason == "length"
    _, end = await collect(provider().stream(make_request()))
    assert end.finish_reason == "length"


async def test_client_is_made_once_and_its_connection_reused(provider, openai_upstream: FakeOpenAI) -> None:
    p = provider()
    client = p._client
    assert client is not None
    assert client.timeout == httpx2.Timeout(3.0, connect=1.0, read=1.0)  # total, connect, read = first_token
    assert client.max_retries == 0
    await p.complete(make_request())
    await collect(p.stream(make_request()))
    await p.complete(make_request())
    assert p._client is client
    assert len({r.peer for r in openai_upstream.requests}) == 1  # one pooled connection for all three
    await p.aclose()
    assert client.is_closed()


async def test_build_provider_uses_the_kind_table(openai_upstream: FakeOpenAI) -> None:
    p = build_provider("main", make_spec("openai", openai_upstream.url + "/v1", api_key="env:OPENAI_API_KEY"), ENV)
    try:
        assert isinstance(p, OpenAIProvider) and p.name == "main"
    finally:
        await p.aclose()


# ------------------------------------------------------------------ availability


async def test_availability_with_a_key() -> None:
    p = OpenAIProvider("o", make_spec("openai", None, api_key="env:OPENAI_API_KEY"), ENV)
    assert p.availability().available
    await p.aclose()


async def test_configured_key_missing_from_the_environment_is_unavailable(make_provider) -> None:
    p = make_provider(OpenAIProvider, make_spec("openai", "http://127.0.0.1:9/v1", api_key="env:MY_OPENAI_KEY"),
                      {"MY_OPENAI_KEY": ""})
    assert p.availability() == Availability(False, "no API key: set MY_OPENAI_KEY")
    assert p._client is None
    with pytest.raises(errors.ProviderUnavailableError, match="MY_OPENAI_KEY"):
        await p.complete(make_request())
    _, err = await stream_failure(p.stream(make_request()))
    assert isinstance(err, errors.ProviderUnavailableError)


async def test_no_key_and_no_base_url_is_unavailable(make_provider) -> None:
    p = make_provider(OpenAIProvider, make_spec("openai", None), {"OPENAI_API_KEY": KEY})
    availability = p.availability()
    assert not availability.available and availability.reason.startswith("no API key")
    assert KEY not in availability.reason


async def test_compatible_server_without_a_key_gets_a_placeholder(make_provider, openai_upstream) -> None:
    p = make_provider(OpenAIProvider, make_spec("openai", openai_upstream.url + "/v1"), {})
    assert p.availability().available
    assert (await p.complete(make_request())).text == "Hello, world!"
    assert openai_upstream.last.headers["authorization"] == "Bearer not-needed"


async def test_malformed_base_url_is_unavailable(make_provider) -> None:
    p = make_provider(OpenAIProvider, make_spec("openai", "localhost:abc/v1", api_key="env:OPENAI_API_KEY"), ENV)
    availability = p.availability()
    assert not availability.available and "malformed base_url" in availability.reason


# ------------------------------------------------------------------ HTTP errors

STATUS_CASES = [
    (Fault(status=401), errors.AuthenticationError, False),
    (Fault(status=403), errors.AuthenticationError, False),
    (CONTEXT_TOO_LONG, errors.ContextTooLongError, False),
    (Fault(status=400, message="This model's maximum context length is 4096 tokens."), errors.ContextTooLongError,
     False),
    (Fault(status=400), errors.BadRequestError, False),
    (Fault(status=404), errors.BadRequestError, False),
    (Fault(status=422), errors.BadRequestError, False),
    (Fault(status=429, headers={"retry-after": "7"}), errors.RateLimitError, True),
    (Fault(status=500), errors.OverloadedError, True),
    (Fault(status=502), errors.OverloadedError, True),
    (Fault(status=503), errors.OverloadedError, True),
    (Fault(status=504), errors.OverloadedError, True),
]


@pytest.mark.parametrize("streaming", [False, True], ids=["complete", "stream"])
@pytest.mark.parametrize(("fault", "cls", "retryable"), STATUS_CASES,
                         ids=[f"{c[0].status}-{c[1].__name__}" for c in STATUS_CASES])
async def test_http_errors_are_mapped(provider, openai_upstream: FakeOpenAI, fault: Fault,
                                      cls: type[errors.ProviderError], retryable: bool, streaming: bool) -> None:
    openai_upstream.fail_next(fault)
    if streaming:
        deltas, err = await stream_failure(provider().stream(make_request("gpt-test")))
        assert deltas == []
    else:
        with pytest.raises(errors.ProviderError) as info:
            await provider().complete(make_request("gpt-test"))
        err = info.value
    assert type(err) is cls
    assert err.retryable is retryable
    assert err.upstream_status == fault.status
    assert err.provider == "test-openai" and err.model == "gpt-test"
    assert err.body["error"]["type"] in {"invalid_request_error", "requests", "server_error"}
    assert len(openai_upstream.requests) == 1  # max_retries=0: the SDK did not retry
    if cls is errors.RateLimitError:
        assert err.retry_after == 7.0 and err.to_dict()["error"]["details"]["retry_after"] == 7.0
    if cls is errors.ContextTooLongError:
        assert isinstance(err, errors.BadRequestError)


async def test_context_length_code_is_kept_in_the_body(provider, openai_upstream: FakeOpenAI) -> None:
    openai_upstream.fail_next(CONTEXT_TOO_LONG)
    with pytest.raises(errors.ContextTooLongError) as info:
        await provider().complete(make_request())
    assert info.value.body["error"]["code"] == "context_length_exceeded"
    assert info.value.body["error"]["param"] is None


async def test_retry_after_as_an_http_date(provider, openai_upstream: FakeOpenAI) -> None:
    when = email.utils.formatdate(time.time() + 30, usegmt=True)
    openai_upstream.fail_next(Fault(status=429, headers={"retry-after": when}))
    with pytest.raises(errors.RateLimitError) as info:
        await provider().complete(make_request())
    assert info.value.retry_after is not None and 27 <= info.value.retry_after <= 30


async def test_retry_after_ms_wins(provider, openai_upstream: FakeOpenAI) -> None:
    openai_upstream.fail_next(Fault(status=429, headers={"retry-after-ms": "1500", "retry-after": "2"}))
    with pytest.raises(errors.RateLimitError) as info:
        await provider().complete(make_request())
    assert info.value.retry_after == 1.5


async def test_429_without_retry_after(provider, openai_upstream: FakeOpenAI) -> None:
    openai_upstream.fail_next(Fault(status=429))
    with pytest.raises(errors.RateLimitError) as info:
        await provider().complete(make_request())
    assert info.value.retry_after is None


async def test_the_api_key_never_appears_in_errors(provider, openai_upstream: FakeOpenAI) -> None:
    openai_upstream.fail_next(Fault(status=401))  # the fake echoes the full key in its message
    with pytest.raises(errors.AuthenticationError) as info:
        await provider().complete(make_request())
    err = info.value
    assert KEY in openai_upstream.last.headers["authorization"]  # the key was sent...
    for text in (str(err), repr(err), err.message, json.dumps(err.to_dict()), repr(err.body), repr(err.details)):
        assert KEY not in text  # ...and is nowhere in the error
    assert "[redacted]" in err.body["error"]["message"]
    assert err.__cause__ is None and err.__suppress_context__


# ------------------------------------------------------------------ transport faults and timeouts


@pytest.mark.parametrize("streaming", [False, True], ids=["complete", "stream"])
async def test_connection_reset_before_any_answer(provider, openai_upstream: FakeOpenAI, streaming: bool) -> None:
    openai_upstream.fail_next(Fault(reset=True))
    if streaming:
        deltas, err = await stream_failure(provider().stream(make_request()))
        assert deltas == []
    else:
        with pytest.raises(errors.ProviderError) as info:
            await provider().complete(make_request())
        err = info.value
    assert type(err) is errors.ProviderConnectionError and err.retryable and err.upstream_status is None


async def test_connection_refused(make_provider) -> None:
    spec = make_spec("openai", f"http://127.0.0.1:{free_port()}/v1", api_key="env:OPENAI_API_KEY")
    with pytest.raises(errors.ProviderConnectionError):
        await make_provider(OpenAIProvider, spec, ENV).complete(make_request())


async def test_complete_times_out_at_first_token(provider, openai_upstream: FakeOpenAI) -> None:
    openai_upstream.fail_next(Fault(delay=1.5))
    started = time.perf_counter()
    with pytest.raises(errors.ProviderTimeoutError) as info:
        await provider(first_token=0.3).complete(make_request())
    assert 0.25 <= time.perf_counter() - started < 1.2
    assert info.value.retryable


async def test_stream_first_token_timeout_despite_keepalives(provider, openai_upstream: FakeOpenAI) -> None:
    # the server answers at once and sends SSE keep-alive comments, but no token for 1.5 s
    openai_upstream.fail_next(Fault(first_text_delay=1.5))
    started = time.perf_counter()
    deltas, err = await stream_failure(provider(first_token=0.3).stream(make_request()))
    assert deltas == []
    assert type(err) is errors.ProviderTimeoutError and "first token" in err.message
    assert 0.25 <= time.perf_counter() - started < 1.2


async def test_stream_total_timeout_after_deltas_is_mid_stream(provider, openai_upstream: FakeOpenAI) -> None:
    openai_upstream.fail_next(Fault(chunk_delay=0.4))  # chunks at 0, 0.4, 0.8, 1.2 s
    deltas, err = await stream_failure(provider(first_token=1.0, total=0.6).stream(make_request()))
    assert deltas == ["Hello", ", "]
    assert isinstance(err, errors.MidStreamError)
    assert err.partial_text == "Hello, " and err.details["cause"] == "provider-timeout"
    assert "total timeout" in err.message
    assert err.usage == Usage()  # OpenAI reports usage only in the last chunk


async def test_stream_cut_mid_way_is_mid_stream(provider, openai_upstream: FakeOpenAI) -> None:
    openai_upstream.fail_next(Fault(cut_after=2))
    deltas, err = await stream_failure(provider().stream(make_request("gpt-test")))
    assert deltas == ["Hello", ", "]
    assert isinstance(err, errors.MidStreamError)
    assert err.partial_text == "Hello, " and err.usage == Usage()
    assert err.details["cause"] == "provider-connection" and err.details["partial_text"] == "Hello, "
    assert err.provider == "test-openai" and err.model == "gpt-test"


@pytest.mark.parametrize("one_write", [False, True], ids=["frame-by-frame", "one-write"])
async def test_malformed_chunk_mid_stream(provider, openai_upstream: FakeOpenAI, one_write: bool) -> None:
    openai_upstream.fail_next(Fault(malformed_after=1, one_write=one_write))
    deltas, err = await stream_failure(provider().stream(make_request()))
    assert deltas == ["Hello"]
    assert isinstance(err, errors.MidStreamError) and err.partial_text == "Hello"
    assert "malformed" in err.message


async def test_malformed_chunk_before_any_delta(provider, openai_upstream: FakeOpenAI) -> None:
    openai_upstream.fail_next(Fault(malformed_after=0))
    deltas, err = await stream_failure(provider().stream(make_request()))
    assert deltas == [] and type(err) is errors.ProviderConnectionError


@pytest.mark.parametrize("one_write", [False, True], ids=["frame-by-frame", "one-write"])
async def test_error_object_inside_the_stream(provider, openai_upstream: FakeOpenAI,
                                              one_write: bool) -> None:
    openai_upstream.fail_next(Fault(error_event_after=2, message="The server had an error", one_write=one_write))
    deltas, err = await stream_failure(provider().stream(make_request()))
    assert deltas == ["Hello", ", "]
    assert isinstance(err, errors.MidStreamError) and err.details["cause"] == "provider-overloaded"
    assert err.body["message"] == "The server had an error"


@pytest.mark.parametrize("one_write", [False, True], ids=["frame-by-frame", "one-write"])
async def test_stream_ending_without_finish_reason_is_mid_stream(provider, openai_upstream: FakeOpenAI,
                                                                 one_write: bool) -> None:
    openai_upstream.fail_next(Fault(truncate=True, one_write=one_write))
    deltas, err = await stream_failure(provider().stream(make_request()))
    assert deltas == ["Hello", ", ", "world", "!"]
    assert isinstance(err, errors.MidStreamError) and err.partial_text == "Hello, world!"


async def test_provider_recovers_after_faults(provider, openai_upstream: FakeOpenAI) -> None:
    p = provider()
    openai_upstream.fail_next(Fault(cut_after=1), Fault(status=503))
    await stream_failure(p.stream(make_request()))
    with pytest.raises(errors.OverloadedError):
        await p.complete(make_request())
    assert (await p.complete(make_request())).text == "Hello, world!"
