"""`rhetor serve` as a user runs it: a subprocess on a free port with the repo's default config, no keys."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.serving import serve

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    served = serve(REPO, tmp_path_factory.mktemp("serve") / "log.txt")  # the repo's own config, no keys
    yield served.base
    served.stop()


def test_health_over_real_http(server: str) -> None:
    body = httpx.get(f"{server}/health").json()
    assert body["status"] == "ok"
    assert body["pipelines"] == ["default", "evaluated"]
    assert body["providers"]["anthropic"]["available"] is False
    assert "ANTHROPIC_API_KEY" in body["providers"]["anthropic"]["reason"]


def test_stream_over_real_http_arrives_in_chunks(server: str) -> None:
    payload = {"message": "What is Tekton?", "context_id": "e2e:1", "task_type": "code", "component": "e2e"}
    events = []
    with httpx.stream("POST", f"{server}/stream", json=payload, timeout=10) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if line.startswith("data: "):
                events.append(json.loads(line[6:]))
    chunks, final = events[:-1], events[-1]
    assert len(chunks) >= 3 and all(not e["done"] for e in chunks)
    assert final["done"] is True
    assert final["message"] == "".join(e["chunk"] for e in chunks)
    assert (final["model"], final["provider"]) == ("simulated", "simulated")
    # No key is set: the router dropped both vendors as unavailable, and the answer says why.
    dropped = [(r["model"], r["reason"], r["detail"]) for r in final["routing_explanation"]["reasons"]
               if r.get("dropped")]
    assert dropped == [("claude-opus", "provider-unavailable", "no API key: set ANTHROPIC_API_KEY"),
                       ("gpt-4-turbo", "provider-unavailable", "no API key: set OPENAI_API_KEY")]
    assert [(a["model"], a["code"]) for a in final["attempts"]] == [("simulated", "ok")]


def test_message_over_real_http(server: str) -> None:
    r = httpx.post(f"{server}/message", json={"message": "Hello, world!", "context_id": "test",
                                              "task_type": "chat", "streaming": False})
    assert r.status_code == 200
    body = r.json()
    assert body["routing_explanation"]["chain"] == ["simulated"]
    assert "dropped claude-haiku (provider-unavailable), gpt-3.5-turbo (provider-unavailable)" in \
        body["routing_explanation"]["summary"]
    assert body["model"] == "simulated" and body["finished"] is True
