"""``kind: anthropic`` through the official SDK against a wire-faithful fake on loopback HTTP."""

from __future__ import annotations

import json
import time

import httpx2
import pytest

from rhetor import errors
from rhetor.providers.anthropic import AnthropicProvider
from rhetor.providers.base import Availability, ProviderRequest
from rhetor.types import Message, Usage
from tests.fakes import FakeAnthropic, Fault
from tests.fakes.anthropic_server import CONTEXT_TOO_LONG
from tests.fakes.harness import KEY, collect, free_port, make_request, make_spec, stream_failure

pytestmark = pytest.mark.asyncio

ENV = {"ANTHROPIC_API_KEY": KEY}
EXPECTED_USAGE = Usage(input_tokens=25, output_tokens=9, cache_read_tokens=11, cache_write_tokens=3)
START_USAGE = Usage(input_tokens=25, output_tokens=1, cache_read_tokens=11, cache_write_tokens=3)  # message_start


@pytest.fixture
def provider(anthropic_upstream: FakeAnthropic, make_provider):  # type: ignore[no-untyped-def]
    def make(**timeouts: float) -> AnthropicProvider:
        spec = make_spec("anthropic", anthropic_upstream.url, api_key="env:ANTHROPIC_API_KEY", **timeouts)
        return make_provider(AnthropicProvider, spec, ENV)
    return make


# ------------------------------------------------------------------ happy paths and request mapping


async def test_complete_maps_system_and_reports_usage(provider, anthropic_upstream: FakeAnthropic) -> None:
    request = ProviderRequest(
        model_id="claude-test", max_tokens=128, temperature=0.2, stop=("\n\nHuman:",),
        messages=(Message("system", "Be brief."), Message("user", "Hi"), Message("assistant", "Hello?"),
                  Message("system", "Answer in English."), Message("user", "Say hello")))
    result = await provider().complete(request)
    assert result.text == "Hello, world!"
    assert result.usage == EXPECTED_USAGE
    assert result.finish_reason == "end_turn"
    sent = anthropic_upstream.last
    assert sent.path == "/v1/messages"
    assert sent.headers["authorization"] == f"Bearer {KEY}"  # the 2.x SDK's way; x-api-key also works
    assert sent.headers["anthropic-version"] == "2026-10-21"
    assert sent.headers["content-type"] == "application/json"  # the SDK's, with the body Rhetor encodes
    # no temperature: that API version refuses sampling parameters (the fake answers 400 to them)
    assert sent.json == {"model": "claude-test", "max_tokens": 128,
                         "stop_sequences": ["\n\nHuman:"], "system": "Be brief.\n\nAnswer in English.",
                         "messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello?"},
                                      {"role": "user", "content": "Say hello"}]}


async def test_no_system_and_no_optional_params(provider, anthropic_upstream: FakeAnthropic) -> None:
    await provider().complete(make_request(system=None))
    body = anthropic_upstream.last.json
    assert set(body) == {"model", "max_tokens", "messages"}


@pytest.mark.parametrize("one_write", [False, True], ids=["frame-by-frame", "one-write"])
async def test_stream_yields_deltas_and_usage_from_start_and_delta(provider, anthropic_upstream: FakeAnthropic,
                                                                   one_write: bool) -> None:
    anthropic_upstream.fail_next(Fault(one_write=one_write))  # many events in one read, or one at a time
    deltas, end = await collect(provider().stream(make_request("claude-test")))
    assert deltas == ["Hello", ", ", "world", "!"]
    assert end.usage == EXPECTED_USAGE
    assert end.finish_reason == "end_turn"
    body = anthropic_upstream.last.json
    assert body["stream"] is True and body["system"] == "Be brief."
    assert anthropic_upstream.last.headers["content-type"] == "application/json"
    assert anthropic_upstream.last.headers["accept"] == "application/json"  # the SDK's; SSE still comes back


async def test_stop_reason_is_passed_through(provider, anthropic_upstream: FakeAnthropic) -> None:
    anthropic_upstream.stop_reason = "max_tokens"
    assert (await provider().complete(make_request())).finish_reason == "max_tokens"
    _, end = await collect(provider().stream(make_request()))
    assert end.finish_reason == "max_tokens"


async def test_client_is_made_once_and_its_connection_reused(provider, anthropic_upstream: FakeAnthropic) -> None:
    p = provider()
    client = p._client
    assert client is not None
    assert client.timeout == httpx2.Timeout(3.0, connect=1.0, read=1.0)  # total, connect, read = first_token
    assert client.max_retries == 0
    await p.complete(make_request())
    await collect(p.stream(make_request()))
    await p.complete(make_request())
    assert p._client is client
    assert len({r.peer for r in anthropic_upstream.requests}) == 1
    await p.aclose()
    assert client.is_closed()


# ------------------------------------------------------------------ availability


async def test_missing_key_is_unavailable_and_names_the_variable(make_provider) -> None:
    p = make_provider(AnthropicProvider, make_spec("anthropic", None, api_key="env:ANTHROPIC_API_KEY"), {})
    assert p.availability() == Availability(False, "no API key: set ANTHROPIC_API_KEY")
    assert p._client is None
    with pytest.raises(errors.ProviderUnavailableError):
        await p.complete(make_request())
    _, err = await stream_failure(p.stream(make_request()))
    assert isinstance(err, errors.ProviderUnavailableError)


async def test_unconfigured_key_is_unavailable(make_provider) -> None:
    p = make_provider(AnthropicProvider, make_spec("anthropic", None), ENV)
    assert not p.availability().available and p.availability().reason.startswith("no API key")


async def test_available_with_key(make_provider) -> None:
    p = make_provider(AnthropicProvider, make_spec("anthropic", None, api_key="env:ANTHROPIC_API_KEY"), ENV)
    availability = p.availability()
    assert availability.available and KEY not in availability.reason


# ------------------------------------------------------------------ HTTP errors

STATUS_CASES = [
    (Fault(status=401), errors.AuthenticationError, False, "authentication_error"),
    (Fault(status=403), errors.AuthenticationError, False, "permission_error"),
    (CONTEXT_TOO_LONG, errors.ContextTooLongError, False, "invalid_request_error"),
    (Fault(status=400), errors.BadRequestError, False, "invalid_request_error"),
    (Fault(status=404), errors.BadRequestError, False, "not_found_error"),
    (Fault(status=429, headers={"retry-after": "12"}), errors.RateLimitError, True, "rate_limit_error"),
    (Fault(status=500), errors.OverloadedError, True, "api_error"),
    (Fault(status=502), errors.OverloadedError, True, "api_error"),
    (Fault(status=503), errors.OverloadedError, True, "api_error"),
    (Fault(status=504), errors.OverloadedError, True, "api_error"),
    (Fault(status=529), errors.OverloadedError, True, "overloaded_error"),
]


@pytest.mark.parametrize("streaming", [False, True], ids=["complete", "stream"])
@pytest.mark.parametrize(("fault", "cls", "retryable", "kind"), STATUS_CASES,
                         ids=[f"{c[0].status}-{c[1].__name__}" for c in STATUS_CASES])
async def test_http_errors_are_mapped(provider, anthropic_upstream: FakeAnthropic, fault: Fault,
                                      cls: type[errors.ProviderError], retryable: bool, kind: str,
                                      streaming: bool) -> None:
    anthropic_upstream.fail_next(fault)
    if streaming:
        deltas, err = await stream_failure(provider().stream(make_request("claude-test")))
        assert deltas == []
    else:
        with pytest.raises(errors.ProviderError) as info:
            await provider().complete(make_request("claude-test"))
        err = info.value
    assert type(err) is cls
    assert err.retryable is retryable
    assert err.upstream_status == fault.status
    assert err.provider == "test-anthropic" and err.model == "claude-test"
    assert err.body["type"] == "error" and err.body["error"]["type"] == kind
    assert len(anthropic_upstream.requests) == 1
    if cls is errors.RateLimitError:
        assert err.retry_after == 12.0


async def test_prompt_too_long_message_is_kept(provider, anthropic_upstream: FakeAnthropic) -> None:
    anthropic_upstream.fail_next(CONTEXT_TOO_LONG)
    with pytest.raises(errors.ContextTooLongError) as info:
        await provider().complete(make_request())
    assert info.value.body["error"]["message"] == "prompt is too long: 208310 tokens > 200000 maximum"
    assert "prompt is too long" in info.value.message


async def test_overloaded_error_type_with_another_status(provider, anthropic_upstream: FakeAnthropic) -> None:
    anthropic_upstream.fail_next(Fault(status=500, error_type="overloaded_error", message="Overloaded"))
    with pytest.raises(errors.OverloadedError) as info:
        await provider().complete(make_request())
    assert info.value.upstream_status == 500


async def test_the_api_key_never_appears_in_errors(provider, anthropic_upstream: FakeAnthropic) -> None:
    anthropic_upstream.fail_next(Fault(status=401))  # the fake echoes the key it got
    with pytest.raises(errors.AuthenticationError) as info:
        await provider().complete(make_request())
    err = info.value
    for text in (str(err), repr(err), json.dumps(err.to_dict()), repr(err.body)):
        assert KEY not in text
    assert err.body["error"]["message"] == "invalid x-api-key ([redacted])"


# ------------------------------------------------------------------ in-stream errors and stream faults


async def test_error_event_before_any_delta(provider, anthropic_upstream: FakeAnthropic) -> None:
    anthropic_upstream.fail_next(Fault(error_event_after=0))
    deltas, err = await stream_failure(provider().stream(make_request()))
    assert deltas == []
    assert type(err) is errors.OverloadedError and err.retryable
    assert err.upstream_status is None  # the HTTP status was 200; the event carries the error
    assert err.body == {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}


@pytest.mark.parametrize("one_write", [False, True], ids=["frame-by-frame", "one-write"])
async def test_error_event_after_deltas_is_mid_stream(provider, anthropic_upstream: FakeAnthropic,
                                                      one_write: bool) -> None:
    anthropic_upstream.fail_next(Fault(error_event_after=2, one_write=one_write))
    deltas, err = await stream_failure(provider().stream(make_request()))
    assert deltas == ["Hello", ", "]
    assert isinstance(err, errors.MidStreamError)
    assert err.partial_text == "Hello, "
    assert err.usage == START_USAGE
    assert err.details["cause"] == "provider-overloaded" and err.details["cause_retryable"] is True
    assert err.body["error"]["type"] == "overloaded_error"


@pytest.mark.parametrize(("kind", "cls"), [("rate_limit_error", errors.RateLimitError),
                                           ("invalid_request_error", errors.BadRequestError),
                                           ("api_error", errors.OverloadedError)])
async def test_error_event_types(provider, anthropic_upstream: FakeAnthropic, kind: str,
                                 cls: type[errors.ProviderError]) -> None:
    anthropic_upstream.fail_next(Fault(error_event_after=0, error_type=kind, message="boom"))
    _, err = await stream_failure(provider().stream(make_request()))
    assert type(err) is cls


async def test_stream_cut_mid_way_keeps_partial_text_and_usage(provider, anthropic_upstream: FakeAnthropic) -> None:
    anthropic_upstream.fail_next(Fault(cut_after=3))
    deltas, err = await stream_failure(provider().stream(make_request()))
    assert deltas == ["Hello", ", ", "world"]
    assert isinstance(err, errors.MidStreamError)
    assert err.partial_text == "Hello, world" and err.usage == START_USAGE
    assert err.details["cause"] == "provider-connection"


@pytest.mark.parametrize("one_write", [False, True], ids=["frame-by-frame", "one-write"])
async def test_malformed_event_mid_stream(provider, anthropic_upstream: FakeAnthropic,
                                          one_write: bool) -> None:
    anthropic_upstream.fail_next(Fault(malformed_after=1, one_write=one_write))
    deltas, err = await stream_failure(provider().stream(make_request()))
    assert deltas == ["Hello"]
    assert isinstance(err, errors.MidStreamError) and err.partial_text == "Hello" and err.usage == START_USAGE


async def test_stream_without_message_stop_is_mid_stream(provider, anthropic_upstream: FakeAnthropic) -> None:
    anthropic_upstream.fail_next(Fault(truncate=True))
    deltas, err = await stream_failure(provider().stream(make_request()))
    assert deltas == ["Hello", ", ", "world", "!"]
    assert isinstance(err, errors.MidStreamError) and "message_stop" in err.message


@pytest.mark.parametrize("streaming", [False, True], ids=["complete", "stream"])
async def test_connection_reset(provider, anthropic_upstream: FakeAnthropic, streaming: bool) -> None:
    anthropic_upstream.fail_next(Fault(reset=True))
    if streaming:
        _, err = await stream_failure(provider().stream(make_request()))
    else:
        with pytest.raises(errors.ProviderError) as info:
            await provider().complete(make_request())
        err = info.value
    assert type(err) is errors.ProviderConnectionError and err.retryable


async def test_connection_refused(make_provider) -> None:
    spec = make_spec("anthropic", f"http://127.0.0.1:{free_port()}", api_key="env:ANTHROPIC_API_KEY")
    _, err = await stream_failure(make_provider(AnthropicProvider, spec, ENV).stream(make_request()))
    assert type(err) is errors.ProviderConnectionError


async def test_complete_times_out(provider, anthropic_upstream: FakeAnthropic) -> None:
    anthropic_upstream.fail_next(Fault(delay=1.5))
    started = time.perf_counter()
    with pytest.raises(errors.ProviderTimeoutError):
        await provider(first_token=0.3).complete(make_request())
    assert 0.25 <= time.perf_counter() - started < 1.2


async def test_stream_first_token_timeout_despite_pings(provider, anthropic_upstream: FakeAnthropic) -> None:
    # message_start and pings arrive at once and keep coming, but no text for 1.5 s
    anthropic_upstream.fail_next(Fault(first_text_delay=1.5))
    started = time.perf_counter()
    deltas, err = await stream_failure(provider(first_token=0.3).stream(make_request()))
    assert deltas == [] and type(err) is errors.ProviderTimeoutError and "first token" in err.message
    assert 0.25 <= time.perf_counter() - started < 1.2


async def test_stream_total_timeout_after_deltas(provider, anthropic_upstream: FakeAnthropic) -> None:
    anthropic_upstream.fail_next(Fault(chunk_delay=0.4))
    deltas, err = await stream_failure(provider(first_token=1.0, total=0.6).stream(make_request()))
    assert deltas == ["Hello", ", "]
    assert isinstance(err, errors.MidStreamError) and err.details["cause"] == "provider-timeout"
    assert err.usage == START_USAGE
