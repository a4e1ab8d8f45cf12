"""The official `openai` SDK, unchanged, against `rhetor serve` in a subprocess (the sim fixture config)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from tests.e2e.serving import serve

SIM = Path(__file__).resolve().parents[1] / "fixtures" / "configs" / "sim"
ANSWER = 'This is a simulated response from Rhetor (no LLM provider was available). You said: "What is Tekton?"'
USER = [{"role": "user", "content": "What is Tekton?"}]


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    served = serve(SIM, tmp_path_factory.mktemp("openai-sdk") / "log.txt")
    yield served.base
    served.stop()


@pytest.fixture
def client(base: str) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{base}/v1", api_key="x", max_retries=0, timeout=10) as c:
        yield c


def test_create_returns_a_chat_completion(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(model="rhetor", messages=USER, temperature=0.2, top_p=1, seed=1,
                                                user="u", extra_body={"rhetor": {"context_id": "sdk:1"}})
    assert completion.object == "chat.completion" and completion.id.startswith("chatcmpl-")
    assert completion.model == "simulated"
    choice = completion.choices[0]
    assert (choice.index, choice.finish_reason, choice.message.role) == (0, "stop", "assistant")
    assert choice.message.content == ANSWER
    assert completion.usage is not None
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens, completion.usage.total_tokens) == (
        8, 26, 34)
    rhetor = (completion.model_extra or {})["rhetor"]
    assert (rhetor["provider"], rhetor["context"]) == ("simulated", "sdk:1")
    assert [a["code"] for a in rhetor["attempts"]] == ["rate-limited", "ok"]


def test_stream_with_usage_arrives_as_chunks(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(model="simulated", messages=USER, stream=True,
                                            stream_options={"include_usage": True})
    chunks = list(stream)
    first, *rest, usage = chunks
    assert first.choices[0].delta.role == "assistant" and first.usage is None
    content = [c.choices[0].delta.content or "" for c in rest]
    assert len([c for c in content if c]) >= 3 and "".join(content) == ANSWER
    assert rest[-1].choices[0].finish_reason == "stop"
    assert usage.choices == [] and usage.usage is not None and usage.usage.total_tokens == 34
    assert {c.id for c in chunks} == {first.id}


async def test_async_client_streams_too(base: str) -> None:
    async with openai.AsyncOpenAI(base_url=f"{base}/v1", api_key="x", max_retries=0, timeout=10) as client:
        stream = await client.chat.completions.create(model="default", messages=USER, stream=True)
        text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
        completion = await client.chat.completions.create(model="auto", messages=USER, max_completion_tokens=3)
    assert text == ANSWER
    assert completion.choices[0].message.content == "This is a"


def test_models_list(client: openai.OpenAI) -> None:
    models = {m.id: m.owned_by for m in client.models.list()}
    assert models == {"simulated": "simulated", "flaky": "simulated", "cut": "simulated", "rhetor": "rhetor",
                      "auto": "rhetor", "default": "rhetor"}
    assert client.models.retrieve("cut").owned_by == "simulated"


def test_unknown_model_raises_not_found(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        client.chat.completions.create(model="gpt-5", messages=USER)
    assert info.value.status_code == 404
    assert (info.value.code, info.value.param, info.value.type) == ("not-found", "model", "invalid_request_error")


def test_unsupported_field_raises_bad_request(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="rhetor", messages=USER, tools=[
            {"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {}}}}])
    assert info.value.param == "tools"


def test_stream_cut_midway_raises_in_the_sdk(client: openai.OpenAI) -> None:
    received = []
    with pytest.raises(openai.APIError, match="simulated stream cut"):
        for chunk in client.chat.completions.create(model="cut", messages=USER, stream=True):
            received.append(chunk.choices[0].delta.content or "")
    assert "".join(received)  # the text that was sent before the cut arrived first


def test_failure_before_output_is_an_http_error(client: openai.OpenAI) -> None:
    with pytest.raises(openai.InternalServerError) as info:
        client.chat.completions.create(model="flaky", messages=USER, stream=True)
    assert info.value.status_code == 502 and info.value.code == "all-targets-failed"
