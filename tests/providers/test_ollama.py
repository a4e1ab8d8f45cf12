"""``kind: ollama`` through the official SDK against a wire-faithful fake on loopback HTTP."""

from __future__ import annotations

import time

import httpx
import pytest

from rhetor import errors
from rhetor.providers.ollama import OllamaProvider
from rhetor.types import Usage
from tests.fakes import FakeOllama, Fault
from tests.fakes.harness import collect, free_port, make_request, make_spec, stream_failure

pytestmark = pytest.mark.asyncio

EXPECTED_USAGE = Usage(input_tokens=26, output_tokens=5)


@pytest.fixture
def provider(ollama_upstream: FakeOllama, make_provider):  # type: ignore[no-untyped-def]
    def make(**timeouts: float) -> OllamaProvider:
        return make_provider(OllamaProvider, make_spec("ollama", ollama_upstream.url, **timeouts), {})
    return make


async def test_complete_maps_options_and_reports_counts(provider, ollama_upstream: FakeOllama) -> None:
    result = await provider().complete(make_request("llama3.2", temperature=0.1, stop=("END",), max_tokens=32))
    assert result.text == "Hello, world!"
    assert result.usage == EXPECTED_USAGE
    assert result.finish_reason == "stop"
    sent = ollama_upstream.last
    assert sent.path == "/api/chat"
    body = sent.json
    assert body["model"] == "llama3.2" and body["stream"] is False
    assert body["messages"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hello"}]
    assert body["options"] == {"num_predict": 32, "temperature": 0.1, "stop": ["END"]}


async def test_unset_options_are_left_out(provider, ollama_upstream: FakeOllama) -> None:
    await provider().complete(make_request())
    assert ollama_upstream.last.json["options"] == {"num_predict": 64}


async def test_stream_yields_deltas_then_counts_from_the_done_line(provider, ollama_upstream: FakeOllama) -> None:
    ollama_upstream.done_reason = "length"
    deltas, end = await collect(provider().stream(make_request("llama3.2")))
    assert deltas == ["Hello", ", ", "world", "!"]
    assert end.usage == EXPECTED_USAGE and end.finish_reason == "length"
    assert ollama_upstream.last.json["stream"] is True


async def test_client_is_made_once_and_its_connection_reused(provider, ollama_upstream: FakeOllama) -> None:
    p = provider()
    client = p._client
    assert client is not None
    assert client._client.timeout == httpx.Timeout(3.0, connect=1.0, read=1.0)  # total, connect, read = first_token
    await p.complete(make_request())
    await collect(p.stream(make_request()))
    await p.complete(make_request())
    assert p._client is client
    assert len({r.peer for r in ollama_upstream.requests}) == 1
    await p.aclose()
    assert client._client.is_closed


async def test_available_without_a_key(make_provider) -> None:
    assert make_provider(OllamaProvider, make_spec("ollama", None), {}).availability().available


@pytest.mark.parametrize("url", ["localhost:11434", "ftp://host:1/", "http://:11434", "http://host:99999"])
async def test_malformed_base_url_is_unavailable(make_provider, url: str) -> None:
    p = make_provider(OllamaProvider, make_spec("ollama", url), {})
    availability = p.availability()
    assert not availability.available and "malformed base_url" in availability.reason
    with pytest.raises(errors.ProviderUnavailableError):
        await p.complete(make_request())


STATUS_CASES = [
    (Fault(status=400), errors.BadRequestError, False),
    (Fault(status=400, message="input length exceeds the context length"), errors.ContextTooLongError, False),
    (Fault(status=401), errors.AuthenticationError, False),
    (Fault(status=404), errors.BadRequestError, False),
    (Fault(status=429), errors.RateLimitError, True),
    (Fault(status=500), errors.OverloadedError, True),
    (Fault(status=502), errors.OverloadedError, True),
    (Fault(status=503), errors.OverloadedError, True),
]


@pytest.mark.parametrize("streaming", [False, True], ids=["complete", "stream"])
@pytest.mark.parametrize(("fault", "cls", "retryable"), STATUS_CASES,
                         ids=[f"{c[0].status}-{c[1].__name__}" for c in STATUS_CASES])
async def test_http_errors_are_mapped(provider, ollama_upstream: FakeOllama, fault: Fault,
                                      cls: type[errors.ProviderError], retryable: bool, streaming: bool) -> None:
    ollama_upstream.fail_next(fault)
    if streaming:
        deltas, err = await stream_failure(provider().stream(make_request("llama3.2")))
        assert deltas == []
    else:
        with pytest.raises(errors.ProviderError) as info:
            await provider().complete(make_request("llama3.2"))
        err = info.value
    assert type(err) is cls and err.retryable is retryable
    assert err.upstream_status == fault.status
    assert err.provider == "test-ollama" and err.model == "llama3.2"
    assert isinstance(err.body, dict) and err.body["error"]
    if cls is errors.RateLimitError:
        assert err.retry_after is None  # the Ollama SDK drops the response headers
    assert len(ollama_upstream.requests) == 1


async def test_model_not_found_body(provider, ollama_upstream: FakeOllama) -> None:
    ollama_upstream.fail_next(Fault(status=404))
    with pytest.raises(errors.BadRequestError) as info:
        await provider().complete(make_request("nope"))
    assert info.value.body == {"error": 'model "nope" not found, try pulling it first'}


async def test_error_line_before_any_delta(provider, ollama_upstream: FakeOllama) -> None:
    ollama_upstream.fail_next(Fault(error_event_after=0))
    deltas, err = await stream_failure(provider().stream(make_request()))
    assert deltas == [] and type(err) is errors.OverloadedError
    assert err.body == {"error": "an error was encountered while running the model"}


async def test_error_line_after_deltas_is_mid_stream(provider, ollama_upstream: FakeOllama) -> None:
    ollama_upstream.fail_next(Fault(error_event_after=2))
    deltas, err = await stream_failure(provider().stream(make_request()))
    assert deltas == ["Hello", ", "]
    assert isinstance(err, errors.MidStreamError) and err.partial_text == "Hello, " and err.usage == Usage()


async def test_stream_cut_mid_way(provider, ollama_upstream: FakeOllama) -> None:
    ollama_upstream.fail_next(Fault(cut_after=1))
    deltas, err = await stream_failure(provider().stream(make_request()))
    assert deltas == ["Hello"]
    assert isinstance(err, errors.MidStreamError) and err.partial_text == "Hello"
    assert err.details["cause"] == "provider-connection"


async def test_malformed_line_mid_stream(provider, ollama_upstream: FakeOllama) -> None:
    ollama_upstream.fail_next(Fault(malformed_after=3))
    deltas, err = await stream_failure(provider().stream(make_request()))
    assert deltas == ["Hello", ", ", "world"]
    assert isinstance(err, errors.MidStreamError) and err.partial_text == "Hello, world"


async def test_stream_without_done_line(provider, ollama_upstream: FakeOllama) -> None:
    ollama_upstream.fail_next(Fault(truncate=True))
    _, err = await stream_failure(provider().stream(make_request()))
    assert isinstance(err, errors.MidStreamError) and err.partial_text == "Hello, world!"


@pytest.mark.parametrize("streaming", [False, True], ids=["complete", "stream"])
async def test_connection_reset(provider, ollama_upstream: FakeOllama, streaming: bool) -> None:
    ollama_upstream.fail_next(Fault(reset=True))
    if streaming:
        _, err = await stream_failure(provider().stream(make_request()))
    else:
        with pytest.raises(errors.ProviderError) as info:
            await provider().complete(make_request())
        err = info.value
    assert type(err) is errors.ProviderConnectionError and err.retryable


@pytest.mark.parametrize("streaming", [False, True], ids=["complete", "stream"])
async def test_server_not_running(make_provider, streaming: bool) -> None:
    p = make_provider(OllamaProvider, make_spec("ollama", f"http://127.0.0.1:{free_port()}"), {})
    assert p.availability().available  # known only by calling it
    if streaming:
        _, err = await stream_failure(p.stream(make_request()))
    else:
        with pytest.raises(errors.ProviderError) as info:
            await p.complete(make_request())
        err = info.value
    assert type(err) is errors.ProviderConnectionError


async def test_complete_times_out(provider, ollama_upstream: FakeOllama) -> None:
    ollama_upstream.fail_next(Fault(delay=1.5))
    started = time.perf_counter()
    with pytest.raises(errors.ProviderTimeoutError):
        await provider(first_token=0.3).complete(make_request())
    assert 0.25 <= time.perf_counter() - started < 1.2


async def test_stream_first_token_timeout(provider, ollama_upstream: FakeOllama) -> None:
    ollama_upstream.fail_next(Fault(first_text_delay=1.5))  # headers at once, then silence
    started = time.perf_counter()
    deltas, err = await stream_failure(provider(first_token=0.3).stream(make_request()))
    assert deltas == [] and type(err) is errors.ProviderTimeoutError
    assert 0.25 <= time.perf_counter() - started < 1.2


async def test_stream_total_timeout_after_deltas(provider, ollama_upstream: FakeOllama) -> None:
    ollama_upstream.fail_next(Fault(chunk_delay=0.4))
    deltas, err = await stream_failure(provider(first_token=1.0, total=0.6).stream(make_request()))
    assert deltas == ["Hello", ", "]
    assert isinstance(err, errors.MidStreamError) and err.details["cause"] == "provider-timeout"
