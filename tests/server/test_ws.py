"""The WebSocket endpoints in-process, spoken as the seeds' clients speak them (`/ws` and the older
`/ws/rhetor/streaming`): every message type, the typing sequence, concurrency, errors, cancellation."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any

import pytest
from litestar.testing import TestClient
from litestar.testing.websocket_test_session import WebSocketTestSession

from rhetor.config.models import ProviderSpec
from rhetor.engine.engine import build_engine
from rhetor.engine.runtime import Clock
from rhetor.providers import Provider, build_provider
from rhetor.providers.base import ProviderRequest, StreamDelta, StreamEnd
from rhetor.providers.simulated import SimulatedProvider
from rhetor.server.app import create_app
from tests.server.conftest import SIM_DIR

TIMEOUT = 5
ANSWER = 'This is a simulated response from Rhetor (no LLM provider was available). You said: "{}"'


class HangingProvider(SimulatedProvider):
    """A message containing "hang" streams one chunk, then waits until cancelled (and records that)."""

    cancelled: threading.Event

    async def stream(self, request: ProviderRequest) -> AsyncIterator[StreamDelta | StreamEnd]:  # type: ignore[override]
        if "hang" not in request.messages[-1].content:
            async for event in super().stream(request):
                yield event
            return
        yield StreamDelta("partial")
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            self.cancelled.set()
            raise


@pytest.fixture
def cancelled() -> threading.Event:
    return threading.Event()


@pytest.fixture
def client(cancelled: threading.Event) -> Iterator[TestClient[Any]]:
    def factory(name: str, spec: ProviderSpec, env: Mapping[str, str], clock: Clock) -> Provider:
        provider = build_provider(name, spec, env, clock)
        if isinstance(provider, SimulatedProvider):
            provider = HangingProvider(name, spec, env)
            provider.cancelled = cancelled
        return provider

    with TestClient(app=create_app(build_engine(SIM_DIR, env={}, provider_factory=factory))) as c:
        yield c


def llm_request(msg_id: Any, message: str, *, streaming: bool = True, **payload: Any) -> dict[str, Any]:
    return {"type": "LLM_REQUEST", "id": msg_id, "source": "test",
            "payload": {"message": message, "context": f"ctx-{msg_id}", "task_type": "chat", "component": None,
                        "streaming": streaming, **payload}}


def until_typing_off(ws: WebSocketTestSession, *ids: Any) -> list[dict[str, Any]]:
    """Every message until each of ``ids`` has said typing false."""
    waiting, got = set(ids), []
    while waiting:
        msg = ws.receive_json(timeout=TIMEOUT)
        got.append(msg)
        if msg["type"] == "UPDATE" and msg["payload"].get("isTyping") is False:
            waiting.discard(msg["id"])
    return got


def shape(messages: list[dict[str, Any]]) -> list[str]:
    """Each message as TYPE or UPDATE:typing-on/off/chunk."""
    out = []
    for m in messages:
        p = m["payload"]
        if m["type"] == "UPDATE":
            out.append("chunk" if "chunk" in p else f"typing-{'on' if p['isTyping'] else 'off'}")
        else:
            out.append(m["type"])
    return out


# ------------------------------------------------------------------------------ /ws


def test_register_is_acknowledged(client: TestClient[Any]) -> None:
    with client.websocket_connect("/ws") as ws:
        ws.send_json({"type": "REGISTER", "source": "MyComponent"})  # as the seed client: no id
        reply = ws.receive_json(timeout=TIMEOUT)
    assert reply.pop("timestamp")
    assert reply == {"type": "RESPONSE", "id": None, "source": "rhetor",
                     "payload": {"status": "registered", "source": "MyComponent"}}


def test_status_reports_service_version_config_and_providers(client: TestClient[Any]) -> None:
    with client.websocket_connect("/ws") as ws:
        ws.send_json({"type": "STATUS", "id": "s-1", "source": "test"})
        reply = ws.receive_json(timeout=TIMEOUT)
    health = client.get("/health").json()
    assert (reply["type"], reply["id"]) == ("RESPONSE", "s-1")
    p = reply["payload"]
    assert (p["status"], p["service"]) == ("ok", "rhetor")
    assert (p["version"], p["config_version"], p["pipelines"]) == (
        health["version"], health["config_version"], health["pipelines"])
    assert p["providers"] == {"simulated": {"kind": "simulated", "available": True,
                                            "reason": "offline provider, always available"}}


def test_streaming_request_types_then_streams_then_answers_then_stops_typing(client: TestClient[Any]) -> None:
    with client.websocket_connect("/ws") as ws:
        ws.send_json(llm_request("m1", "What is Tekton?"))
        got = until_typing_off(ws, "m1")
    kinds = shape(got)
    assert kinds[0] == "typing-on" and kinds[-2:] == ["RESPONSE", "typing-off"]
    assert kinds[1:-2] == ["chunk"] * (len(kinds) - 3) and len(kinds) - 3 >= 3
    assert all(m["id"] == "m1" and m["source"] == "rhetor" for m in got)
    assert got[0]["payload"] == {"status": "typing", "isTyping": True, "context": "ctx-m1"}
    assert got[-1]["payload"] == {"status": "typing", "isTyping": False, "context": "ctx-m1"}
    chunks = [m["payload"] for m in got[1:-2]]
    assert all(c["context"] == "ctx-m1" and c["done"] is False for c in chunks)
    response = got[-2]["payload"]
    assert response["message"] == "".join(c["chunk"] for c in chunks) == ANSWER.format("What is Tekton?")
    assert (response["model"], response["provider"], response["context"]) == ("simulated", "simulated", "ctx-m1")
    assert response["usage"]["output_tokens"] > 0 and response["cost"] == {"usd": 0.0}
    assert [a["code"] for a in response["attempts"]] == ["rate-limited", "ok"]


def test_non_streaming_request_has_no_chunks(client: TestClient[Any]) -> None:
    with client.websocket_connect("/ws") as ws:
        ws.send_json(llm_request(7, "hello", streaming=False))
        got = until_typing_off(ws, 7)
    assert shape(got) == ["typing-on", "RESPONSE", "typing-off"]
    assert got[1]["payload"]["message"] == ANSWER.format("hello")


def test_request_without_id_gets_one_on_every_reply(client: TestClient[Any]) -> None:
    with client.websocket_connect("/ws") as ws:  # the quick reference's JavaScript sends no id
        ws.send_json({"type": "LLM_REQUEST", "source": "UI",
                      "payload": {"message": "hi", "context": "test", "task_type": "chat", "streaming": True}})
        first = ws.receive_json(timeout=TIMEOUT)
        got = [first, *until_typing_off(ws, first["id"])]
    assert first["id"] and {m["id"] for m in got} == {first["id"]}
    assert shape(got)[-2:] == ["RESPONSE", "typing-off"]


def test_concurrent_requests_on_one_socket_interleave_and_keep_their_ids(client: TestClient[Any]) -> None:
    with client.websocket_connect("/ws") as ws:
        ws.send_json(llm_request("a", "first question"))
        ws.send_json(llm_request("b", "second question"))
        got = until_typing_off(ws, "a", "b")
    for msg_id, text in (("a", "first question"), ("b", "second question")):
        mine = [m for m in got if m["id"] == msg_id]
        assert shape(mine)[0] == "typing-on" and shape(mine)[-2:] == ["RESPONSE", "typing-off"]
        chunks = "".join(m["payload"]["chunk"] for m in mine if "chunk" in m["payload"])
        assert chunks == mine[-2]["payload"]["message"] == ANSWER.format(text)
    assert [m["id"] for m in got] != sorted(m["id"] for m in got)  # interleaved, not one after the other


def test_a_slow_request_does_not_hold_up_another(client: TestClient[Any], cancelled: threading.Event) -> None:
    with client.websocket_connect("/ws") as ws:
        ws.send_json(llm_request("slow", "hang here"))
        assert shape([ws.receive_json(timeout=TIMEOUT), ws.receive_json(timeout=TIMEOUT)]) == ["typing-on", "chunk"]
        ws.send_json(llm_request("fast", "quick one", streaming=False))
        got = until_typing_off(ws, "fast")  # answered while "slow" is still in flight
        assert shape(got) == ["typing-on", "RESPONSE", "typing-off"] and {m["id"] for m in got} == {"fast"}
        assert not cancelled.is_set()
    assert cancelled.wait(TIMEOUT)


def test_disconnect_mid_stream_cancels_the_provider_call(client: TestClient[Any], cancelled: threading.Event) -> None:
    with client.websocket_connect("/ws") as ws:
        ws.send_json(llm_request("h", "please hang", model="simulated"))
        assert ws.receive_json(timeout=TIMEOUT)["payload"]["isTyping"] is True
        assert ws.receive_json(timeout=TIMEOUT)["payload"]["chunk"] == "partial"
    assert cancelled.wait(TIMEOUT)


@pytest.mark.parametrize(("raw", "code", "words"), [
    ("{not json", "bad-request", "not valid JSON"),
    ("[1, 2]", "bad-request", "must be a JSON object"),
])
def test_unreadable_messages_are_errors(client: TestClient[Any], raw: str, code: str, words: str) -> None:
    with client.websocket_connect("/ws") as ws:
        ws.send_text(raw)
        reply = ws.receive_json(timeout=TIMEOUT)
    assert (reply["type"], reply["id"], reply["payload"]["code"]) == ("ERROR", None, code)
    assert words in reply["payload"]["message"]


def test_unknown_type_is_an_error_with_the_id(client: TestClient[Any]) -> None:
    with client.websocket_connect("/ws") as ws:
        ws.send_json({"type": "LLM_REQUST", "id": "x1", "payload": {}})
        reply = ws.receive_json(timeout=TIMEOUT)
    assert (reply["type"], reply["id"]) == ("ERROR", "x1")
    assert reply["payload"]["details"] == {"field": "type", "known_types": ["REGISTER", "LLM_REQUEST", "STATUS"]}


@pytest.mark.parametrize(("payload", "field"), [
    ({"context": "c"}, "payload.message"),
    ({"message": "hi", "contxt": "c"}, "payload.contxt"),
    ({"message": "hi", "temperature": 9}, "payload.temperature"),
    ({"message": "hi", "context": 5}, "payload.context"),
])
def test_invalid_payload_is_an_error_naming_the_field(client: TestClient[Any], payload: dict[str, Any],
                                                      field: str) -> None:
    with client.websocket_connect("/ws") as ws:
        ws.send_json({"type": "LLM_REQUEST", "id": "p1", "payload": payload})
        reply = ws.receive_json(timeout=TIMEOUT)
        ws.send_json({"type": "STATUS", "id": "after"})  # nothing else was sent for p1 (no typing)
        assert ws.receive_json(timeout=TIMEOUT)["id"] == "after"
    assert (reply["type"], reply["id"], reply["payload"]["code"]) == ("ERROR", "p1", "bad-request")
    assert reply["payload"]["details"]["field"] == field


def test_engine_error_is_an_error_then_typing_stops(client: TestClient[Any]) -> None:
    with client.websocket_connect("/ws") as ws:
        ws.send_json(llm_request("e1", "x", model="flaky"))
        got = until_typing_off(ws, "e1")
        ws.send_json(llm_request("e2", "x", model="simulatd", streaming=False))
        got2 = until_typing_off(ws, "e2")
    assert shape(got) == ["typing-on", "ERROR", "typing-off"]
    error = got[1]["payload"]
    assert (error["code"], error["context"]) == ("all-targets-failed", "ctx-e1")
    assert error["details"]["attempts"][0]["code"] == "rate-limited"
    assert shape(got2) == ["typing-on", "ERROR", "typing-off"]
    assert got2[1]["payload"]["details"]["field"] == "model"
    assert "did you mean 'simulated'?" in got2[1]["payload"]["message"]


def test_stream_cut_midway_is_an_error_after_the_chunks(client: TestClient[Any]) -> None:
    with client.websocket_connect("/ws") as ws:
        ws.send_json(llm_request("c1", "a long enough message to be cut", model="cut"))
        got = until_typing_off(ws, "c1")
    kinds = shape(got)
    assert kinds[0] == "typing-on" and kinds[-2:] == ["ERROR", "typing-off"] and "RESPONSE" not in kinds
    sent = "".join(m["payload"]["chunk"] for m in got if "chunk" in m["payload"])
    error = got[-2]["payload"]
    assert error["code"] == "mid-stream-error" and sent and error["details"]["partial_text"] == sent


# ------------------------------------------------------------------------------ /ws/rhetor/streaming


def legacy_until_done(ws: WebSocketTestSession) -> list[dict[str, Any]]:
    got = []
    while not got or got[-1]["type"] == "content_chunk":
        got.append(ws.receive_json(timeout=TIMEOUT))
    return got


def test_legacy_stream_sends_content_chunks_then_complete(client: TestClient[Any]) -> None:
    with client.websocket_connect("/ws/rhetor/streaming?api_key=anything") as ws:
        ws.send_json({"prompt": "What is Tekton?", "temperature": 0.7, "stream": True})
        got = legacy_until_done(ws)
        ws.send_json({"prompt": "again", "model": "simulated", "max_tokens": 2, "stream": True})
        again = legacy_until_done(ws)
    chunks, final = got[:-1], got[-1]
    assert len(chunks) >= 3 and all(set(c) == {"type", "text"} for c in chunks)
    assert final["type"] == "content_complete"
    assert final["text"] == "".join(c["text"] for c in chunks) == ANSWER.format("What is Tekton?")
    assert (final["model"], final["provider"]) == ("simulated", "simulated")
    assert final["usage"]["output_tokens"] > 0 and "cost" in final
    assert again[-1]["text"] == "This is"


def test_legacy_without_stream_sends_only_complete(client: TestClient[Any]) -> None:
    with client.websocket_connect("/ws/rhetor/streaming") as ws:
        ws.send_json({"prompt": "hello", "stream": False})
        reply = ws.receive_json(timeout=TIMEOUT)
    assert reply["type"] == "content_complete" and reply["text"] == ANSWER.format("hello")


@pytest.mark.parametrize(("request_", "code"), [
    ({"prompt": "x", "model": "flaky"}, "all-targets-failed"),
    ({"prompt": "x", "model": "nope"}, "bad-request"),
    ({"promt": "x"}, "bad-request"),
    ("not json", "bad-request"),
])
def test_legacy_errors(client: TestClient[Any], request_: Any, code: str) -> None:
    with client.websocket_connect("/ws/rhetor/streaming") as ws:
        ws.send_text(request_ if isinstance(request_, str) else json.dumps(request_))
        reply = ws.receive_json(timeout=TIMEOUT)
    assert reply["type"] == "error" and reply["error"]["code"] == code and reply["error"]["message"]


def test_legacy_stream_cut_midway_ends_with_an_error(client: TestClient[Any]) -> None:
    with client.websocket_connect("/ws/rhetor/streaming") as ws:
        ws.send_json({"prompt": "a long enough message to be cut", "model": "cut", "stream": True})
        got = legacy_until_done(ws)
    assert [m["type"] for m in got] == ["content_chunk", "content_chunk", "error"]
    assert got[-1]["error"]["code"] == "mid-stream-error"


def test_legacy_disconnect_cancels_the_provider_call(client: TestClient[Any], cancelled: threading.Event) -> None:
    with client.websocket_connect("/ws/rhetor/streaming") as ws:
        ws.send_json({"prompt": "hang on", "model": "simulated", "stream": True})
        assert ws.receive_json(timeout=TIMEOUT) == {"type": "content_chunk", "text": "partial"}
    assert cancelled.wait(TIMEOUT)
