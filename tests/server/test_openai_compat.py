"""The OpenAI-compatible API in-process: exact JSON and SSE formats, model resolution, errors, /v1/models."""

from __future__ import annotations

import json
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import AsyncTestClient

from rhetor.engine.engine import build_engine
from rhetor.errors import BudgetExceededError, RateLimitError, RequestError
from rhetor.server.app import create_app
from rhetor.server.openai_compat import _error_body, _finish
from tests.server.conftest import SIM_DIR, sse_events

URL = "/v1/chat/completions"
ANSWER = 'This is a simulated response from Rhetor (no LLM provider was available). You said: "What is Tekton?"'
USER = [{"role": "user", "content": "What is Tekton?"}]


def ask(model: str = "rhetor", messages: list[dict[str, Any]] | None = None, **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": messages or USER, **extra}


@pytest.fixture
async def rich_client(tmp_path: Path) -> AsyncIterator[AsyncTestClient]:
    """The sim config plus: a model whose provider id differs from its name, a `chat` task, a second pipeline."""
    root = tmp_path / "cfg"
    shutil.copytree(SIM_DIR, root)
    providers = (root / "providers.yaml").read_text()
    (root / "providers.yaml").write_text(providers + '  echo: {provider: simulated, id: "simulated:delay=0", '
                                         "context_window: 1000, price: {input: 0, output: 0}}\n")
    (root / "tasks.yaml").write_text("tasks:\n  default: {chain: [flaky, simulated]}\n"
                                     "  chat: {chain: [echo]}\n  quick: {chain: [simulated], pipeline: other}\n")
    pipeline = (root / "pipelines" / "default.yaml").read_text().replace("name: default", "name: other")
    (root / "pipelines" / "other.yaml").write_text(pipeline)
    async with AsyncTestClient(app=create_app(build_engine(root, env={}))) as c:
        yield c


# ------------------------------------------------------------------------------ non-streaming


async def test_completion_is_openais_exact_format_plus_a_rhetor_object(client: AsyncTestClient) -> None:
    r = await client.post(URL, json=ask())
    assert r.status_code == 200
    body = r.json()
    rhetor = body.pop("rhetor")
    assert body.pop("id") == f"chatcmpl-{rhetor['request_id']}" and r.headers["x-request-id"] == rhetor["request_id"]
    assert isinstance(body.pop("created"), int)
    assert body == {
        "object": "chat.completion",
        "model": "simulated",  # the model that answered, not the alias asked for
        "choices": [{"index": 0, "message": {"role": "assistant", "content": ANSWER}, "finish_reason": "stop",
                     "logprobs": None}],
        "usage": {"prompt_tokens": 8, "completion_tokens": 26, "total_tokens": 34,
                  "prompt_tokens_details": {"cached_tokens": 0}},
    }
    assert set(rhetor) == {"provider", "model_id", "pipeline", "cost", "usage", "attempts", "routing_explanation",
                           "trace", "context", "request_id"}
    assert (rhetor["provider"], rhetor["pipeline"], rhetor["cost"]) == ("simulated", "default", {"usd": 0.0})
    assert [(a["model"], a["code"]) for a in rhetor["attempts"]] == [("flaky", "rate-limited"), ("simulated", "ok")]
    assert rhetor["routing_explanation"]["chain"] == ["flaky", "simulated"]
    assert [t["id"] for t in rhetor["trace"]] == ["route", "generate"]


async def test_auto_is_default_routing_too(client: AsyncTestClient) -> None:
    body = (await client.post(URL, json=ask("auto"))).json()
    assert body["rhetor"]["routing_explanation"]["chain"] == ["flaky", "simulated"]


async def test_model_names_a_model_by_name_or_by_provider_id(rich_client: AsyncTestClient) -> None:
    for asked in ("echo", "simulated:delay=0"):
        body = (await rich_client.post(URL, json=ask(asked))).json()
        assert body["model"] == "echo"
        assert body["rhetor"]["model_id"] == "simulated:delay=0"
        assert [a["model"] for a in body["rhetor"]["attempts"]] == ["echo"]  # that model alone, no chain


async def test_model_names_a_task_type(rich_client: AsyncTestClient) -> None:
    body = (await rich_client.post(URL, json=ask("chat"))).json()
    explanation = body["rhetor"]["routing_explanation"]
    assert (explanation["task_type"], explanation["chain"], body["model"]) == ("chat", ["echo"], "echo")


async def test_model_names_a_pipeline(rich_client: AsyncTestClient) -> None:
    body = (await rich_client.post(URL, json=ask("other", rhetor={"task_type": "quick"}))).json()
    assert body["rhetor"]["pipeline"] == "other"
    assert body["rhetor"]["routing_explanation"]["chain"] == ["simulated"]


async def test_unknown_model_is_a_404_in_both_error_shapes(client: AsyncTestClient) -> None:
    r = await client.post(URL, json=ask("gpt-5"))
    assert r.status_code == 404
    error = r.json()["error"]
    assert set(error) == {"code", "message", "details", "type", "param"}
    assert (error["code"], error["type"], error["param"]) == ("not-found", "invalid_request_error", "model")
    assert "'gpt-5' does not exist" in error["message"]
    assert error["details"]["known"] == ["simulated", "flaky", "cut", "rhetor", "auto", "default"]


async def test_rhetor_extras_route_and_come_back(client: AsyncTestClient) -> None:
    extras = {"component": "ui", "context_id": "ui:s1", "task_type": "chat", "routing_parameters": {}}
    body = (await client.post(URL, json=ask(rhetor=extras))).json()
    assert body["rhetor"]["context"] == "ui:s1"
    assert "unknown task type 'chat'" in body["rhetor"]["routing_explanation"]["summary"]


async def test_text_parts_system_and_developer_messages_and_history(client: AsyncTestClient) -> None:
    messages = [{"role": "system", "content": "Be brief."}, {"role": "developer", "content": "Really."},
                {"role": "user", "content": "first", "name": "alice"},
                {"role": "assistant", "content": "ok", "tool_calls": None, "refusal": None},
                {"role": "user", "content": [{"type": "text", "text": "What is "},
                                             {"type": "text", "text": "Tekton?"}]}]
    body = (await client.post(URL, json=ask("simulated", messages))).json()
    assert body["choices"][0]["message"]["content"] == ANSWER


async def test_sampling_fields_sdks_send_are_accepted(client: AsyncTestClient) -> None:
    harmless = {"top_p": 0.9, "presence_penalty": 0, "frequency_penalty": 0, "seed": 7, "metadata": {"a": "b"},
                "user": "u1", "logit_bias": {}, "store": False, "parallel_tool_calls": True, "n": 1,
                "temperature": 0.2, "stop": "\n\n", "response_format": {"type": "text"}, "tool_choice": "none"}
    r = await client.post(URL, json=ask("simulated", **harmless))
    assert r.status_code == 200
    r = await client.post(URL, json=ask("simulated", stop=["a", "b"], max_tokens=3))
    assert r.json()["choices"][0]["message"]["content"] == "This is a"


async def test_max_completion_tokens_caps_the_answer(client: AsyncTestClient) -> None:
    body = (await client.post(URL, json=ask("simulated", max_completion_tokens=2))).json()
    assert body["choices"][0]["message"]["content"] == "This is"


# ------------------------------------------------------------------------------ errors


@pytest.mark.parametrize(("extra", "param", "words"), [
    ({"temprature": 0.2}, "temprature", "unknown field 'temprature'"),
    ({"n": 2}, "n", "n must be 1"),
    ({"tools": [{"type": "function", "function": {"name": "f"}}]}, "tools", "not supported"),
    ({"functions": [{"name": "f"}]}, "functions", "not supported"),
    ({"tool_choice": "auto"}, "tool_choice", "not supported"),
    ({"response_format": {"type": "json_object"}}, "response_format", "only {\"type\": \"text\"}"),
    ({"logprobs": True}, "logprobs", "not supported"),
    ({"stream_options": {"include_usage": True}}, "stream_options", "only allowed when stream is true"),
    ({"temperature": 3}, "temperature", "less than or equal to 2"),
    ({"max_tokens": 5, "max_completion_tokens": 6}, "max_tokens", "differ"),
    ({"rhetor": {"team": "x"}}, "rhetor.team", "unknown field 'rhetor.team'"),
    ({"rhetor": {"routing_parameters": {"complexity": "extreme"}}}, "rhetor.routing_parameters.complexity",
     "routing_parameters.complexity"),
    ({"messages": []}, "messages", "at least 1 item"),
    ({"messages": [{"role": "tool", "content": "x", "tool_call_id": "1"}]}, "messages[0].role", "not supported"),
    ({"messages": [{"role": "user", "content": [{"type": "text", "text": "a"},
                                                {"type": "image_url", "image_url": {"url": "x"}}]}]},
     "messages[0].content[1].type", "only text parts"),
    ({"messages": [{"role": "user"}]}, "messages[0].content", "must be a string or a list"),
    ({"messages": [{"role": "assistant", "content": None, "tool_calls": [{"id": "1"}]}]},
     "messages[0].tool_calls", "not supported"),
])
async def test_bad_requests_are_400s_naming_the_field(client: AsyncTestClient, extra: dict[str, Any], param: str,
                                                      words: str) -> None:
    r = await client.post(URL, json={**ask("simulated"), **extra})
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert (error["code"], error["type"], error["param"]) == ("bad-request", "invalid_request_error", param)
    assert words in error["message"]


async def test_invalid_json_and_non_object_bodies_are_400s(client: AsyncTestClient) -> None:
    for raw in (b"{not json", b"[1, 2]"):
        r = await client.post(URL, content=raw, headers={"content-type": "application/json"})
        assert r.status_code == 400
        assert r.json()["error"]["type"] == "invalid_request_error"


async def test_engine_failure_maps_its_status(client: AsyncTestClient) -> None:
    r = await client.post(URL, json=ask("flaky"))
    assert r.status_code == 502
    error = r.json()["error"]
    assert (error["code"], error["type"], error["param"]) == ("all-targets-failed", "api_error", None)
    assert error["details"]["attempts"][0]["code"] == "rate-limited"


def test_error_types_follow_openais_vocabulary() -> None:
    assert _error_body(RateLimitError("slow down"))["error"]["type"] == "rate_limit_error"
    assert _error_body(BudgetExceededError("over"))["error"]["type"] == "insufficient_quota"
    assert _error_body(RequestError("x", field="provider"))["error"]["param"] == "rhetor.provider"
    assert [_finish(r) for r in ("end_turn", "stop_sequence", None, "max_tokens", "length", "tool_use")] == [
        "stop", "stop", "stop", "length", "length", "tool_calls"]


# ------------------------------------------------------------------------------ streaming


def _raw_events(text: str) -> list[str]:
    return [line[6:] for line in text.split("\n") if line.startswith("data: ")]


async def test_stream_with_usage_is_openais_exact_sequence(client: AsyncTestClient) -> None:
    r = await client.post(URL, json=ask(stream=True, stream_options={"include_usage": True}))
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    raw = _raw_events(r.text)
    assert raw[-1] == "[DONE]" and r.text.endswith("data: [DONE]\n\n")
    events = [json.loads(e) for e in raw[:-1]]
    ids, created = {e.pop("id") for e in events}, {e.pop("created") for e in events}
    assert len(ids) == 1 and ids.pop().startswith("chatcmpl-") and len(created) == 1
    first, *content, final, usage = events
    assert first == {"object": "chat.completion.chunk", "model": "rhetor", "usage": None, "choices": [
        {"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None, "finish_reason": None}]}
    assert len(content) >= 3
    for e in content:
        assert e["usage"] is None and e["object"] == "chat.completion.chunk"
        assert e["choices"][0]["finish_reason"] is None and set(e["choices"][0]["delta"]) == {"content"}
    assert "".join(e["choices"][0]["delta"]["content"] for e in content) == ANSWER
    rhetor = final.pop("rhetor")
    assert final == {"object": "chat.completion.chunk", "model": "simulated", "usage": None, "choices": [
        {"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}]}
    assert [a["code"] for a in rhetor["attempts"]] == ["rate-limited", "ok"]
    assert usage == {"object": "chat.completion.chunk", "model": "simulated", "choices": [],
                     "usage": {"prompt_tokens": 8, "completion_tokens": 26, "total_tokens": 34,
                               "prompt_tokens_details": {"cached_tokens": 0}}}


async def test_stream_without_usage_has_no_usage_key_at_all(client: AsyncTestClient) -> None:
    r = await client.post(URL, json=ask("simulated", stream=True))
    raw = _raw_events(r.text)
    assert raw[-1] == "[DONE]"
    events = [json.loads(e) for e in raw[:-1]]
    assert all("usage" not in e and len(e["choices"]) == 1 for e in events)
    assert events[-1]["choices"][0]["finish_reason"] == "stop"


async def test_stream_cut_midway_ends_with_an_error_event_and_no_done(client: AsyncTestClient) -> None:
    r = await client.post(URL, json=ask("cut", stream=True))
    assert r.status_code == 200
    assert "[DONE]" not in r.text
    events = sse_events(r.text)
    sent = "".join(e["choices"][0]["delta"].get("content", "") for e in events[:-1])
    error = events[-1]["error"]
    assert (error["code"], error["type"]) == ("mid-stream-error", "api_error")
    assert sent and error["details"]["partial_text"] == sent


async def test_stream_failing_before_output_is_a_plain_http_error(client: AsyncTestClient) -> None:
    r = await client.post(URL, json=ask("flaky", stream=True))
    assert r.status_code == 502
    assert r.headers["content-type"].startswith("application/json")
    assert r.json()["error"]["code"] == "all-targets-failed"


# ------------------------------------------------------------------------------ /v1/models


async def test_models_lists_models_then_routable_aliases(rich_client: AsyncTestClient) -> None:
    r = await rich_client.get("/v1/models")
    assert r.status_code == 200
    body = r.json()
    assert body["object"] == "list"
    assert all(set(m) == {"id", "object", "created", "owned_by"} and m["object"] == "model" and
               isinstance(m["created"], int) for m in body["data"])
    assert [(m["id"], m["owned_by"]) for m in body["data"]] == [
        ("simulated", "simulated"), ("flaky", "simulated"), ("cut", "simulated"), ("echo", "simulated"),
        ("rhetor", "rhetor"), ("auto", "rhetor"), ("default", "rhetor"), ("chat", "rhetor"), ("quick", "rhetor"),
        ("other", "rhetor")]


async def test_model_retrieve_and_its_404(client: AsyncTestClient) -> None:
    r = await client.get("/v1/models/flaky")
    assert r.json() == {"id": "flaky", "object": "model", "created": r.json()["created"], "owned_by": "simulated"}
    r = await client.get("/v1/models/nope")
    assert r.status_code == 404 and r.json()["error"]["param"] == "model"
