"""The HTTP API in-process: documented response shape, SSE events, errors as JSON naming the field."""

from __future__ import annotations

import uuid
from datetime import datetime

from litestar.testing import AsyncTestClient

from rhetor.server import observe
from tests.server.conftest import sse_events


async def test_health_reports_config_version_and_pipelines(client: AsyncTestClient) -> None:
    r = await client.get("/health")
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "ok"
    assert body["pipelines"] == ["default"]
    assert len(body["config_version"]) == 16
    assert body["providers"]["simulated"] == {"kind": "simulated", "available": True,
                                              "reason": "offline provider, always available"}


async def test_message_returns_the_consistent_format(client: AsyncTestClient) -> None:
    r = await client.post("/message", json={"message": "What is Tekton?", "context_id": "comp:s1",
                                            "task_type": "chat", "component": "comp", "streaming": False})
    assert r.status_code == 200
    body = r.json()
    assert body["message"] == ('This is a simulated response from Rhetor (no LLM provider was available). '
                               'You said: "What is Tekton?"')
    assert (body["model"], body["provider"], body["context"], body["finished"]) == (
        "simulated", "simulated", "comp:s1", True)
    datetime.fromisoformat(body["timestamp"].replace("Z", "+00:00"))
    assert body["usage"] == {"input_tokens": 8, "output_tokens": 26, "cache_read_tokens": 0,
                             "cache_write_tokens": 0, "total_tokens": 34}
    assert body["cost"] == {"usd": 0.0}
    # The sim config's chain is [flaky, simulated]: the answer says what failed first and why.
    assert [a["code"] for a in body["attempts"]] == ["rate-limited", "ok"]
    assert body["routing_explanation"]["chain"] == ["flaky", "simulated"]
    assert "unknown task type 'chat'" in body["routing_explanation"]["summary"]
    assert [t["id"] for t in body["trace"]] == ["route", "generate"]
    assert r.headers["x-request-id"] == body["request_id"]
    assigned = uuid.UUID(hex=body["request_id"])  # a random UUID4, written as 32 hex digits
    assert (assigned.version, assigned.variant, assigned.hex) == (4, uuid.RFC_4122, body["request_id"])


def test_assigned_request_ids_are_uuid4_hex_and_unique() -> None:
    ids = [observe.new_request_id() for _ in range(20_000)]
    assert len(set(ids)) == len(ids)
    for made in ids[:2000]:
        parsed = uuid.UUID(hex=made)
        assert (parsed.version, parsed.variant, parsed.hex) == (4, uuid.RFC_4122, made)
    # every bit but the six fixed ones varies
    varying = 0
    for made in ids:
        varying |= int(made, 16) ^ int(ids[0], 16)
    assert bin(varying).count("1") == 122


async def test_stream_sends_chunks_then_done_with_the_whole_message(client: AsyncTestClient) -> None:
    r = await client.post("/stream", json={"message": "stream this please", "context_id": "c1"})
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/event-stream")
    events = sse_events(r.text)
    chunks, final = events[:-1], events[-1]
    assert len(chunks) >= 3
    assert all(e["done"] is False and e["chunk"] for e in chunks)
    assert final["done"] is True and final["finished"] is True
    assert final["message"] == "".join(e["chunk"] for e in chunks)
    assert (final["model"], final["provider"], final["context"]) == ("simulated", "simulated", "c1")
    assert final["usage"]["output_tokens"] > 0


async def test_message_with_streaming_true_streams_like_stream(client: AsyncTestClient) -> None:
    r = await client.post("/message", json={"message": "hi", "streaming": True})
    events = sse_events(r.text)
    assert events[-1]["done"] is True
    assert events[-1]["message"] == "".join(e["chunk"] for e in events[:-1])


async def test_stream_cut_midway_ends_with_an_error_event_not_done(client: AsyncTestClient) -> None:
    r = await client.post("/stream", json={"message": "a long enough message to be cut", "model": "cut"})
    events = sse_events(r.text)
    final = events[-1]
    assert final["finished"] is False
    assert final["error"]["code"] == "mid-stream-error"
    sent = "".join(e["chunk"] for e in events[:-1])
    assert sent and final["error"]["details"]["partial_text"] == sent
    assert final["error"]["details"]["cost_usd"] > 0
    assert "message" not in final


async def test_missing_field_is_a_400_naming_it(client: AsyncTestClient) -> None:
    r = await client.post("/message", json={"context_id": "x"})
    assert r.status_code == 400
    error = r.json()["error"]
    assert error["code"] == "bad-request"
    assert error["details"]["field"] == "message"


async def test_unknown_field_and_wrong_type_are_400s(client: AsyncTestClient) -> None:
    r = await client.post("/message", json={"message": "x", "temprature": 0.3})
    assert r.status_code == 400 and r.json()["error"]["details"]["field"] == "temprature"
    r = await client.post("/message", json={"message": "x", "temperature": "hot"})
    assert r.status_code == 400 and r.json()["error"]["details"]["field"] == "temperature"


async def test_invalid_json_is_a_400(client: AsyncTestClient) -> None:
    r = await client.post("/message", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "bad-request"


async def test_unknown_model_is_a_400_with_the_field(client: AsyncTestClient) -> None:
    r = await client.post("/message", json={"message": "x", "model": "simulatd"})
    assert r.status_code == 400
    error = r.json()["error"]
    assert error["details"]["field"] == "model"
    assert "did you mean 'simulated'?" in error["message"]


async def test_every_target_failing_is_a_502_listing_each_attempt(client: AsyncTestClient) -> None:
    r = await client.post("/message", json={"message": "x", "model": "flaky"})
    assert r.status_code == 502
    error = r.json()["error"]
    assert error["code"] == "all-targets-failed"
    assert error["details"]["attempts"] == [
        {"model": "flaky", "provider": "simulated", "code": "rate-limited", "status": None,
         "message": "simulated rate-limited"}]


async def test_unknown_route_is_a_json_404(client: AsyncTestClient) -> None:
    r = await client.get("/nope")
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "not-found"


async def test_health_shows_circuit_state_after_failures(client: AsyncTestClient) -> None:
    await client.post("/message", json={"message": "x", "model": "flaky"})
    circuits = (await client.get("/health")).json()["circuits"]
    assert circuits == {"flaky": {"state": "closed", "consecutive_failures": 1}}
