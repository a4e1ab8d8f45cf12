"""Both WebSocket protocols over real sockets against `rhetor serve`, with the `websockets` client the
seeds' examples use (uvicorn needs the same package to accept WebSocket upgrades at all)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import websockets

from tests.e2e.serving import serve

SIM = Path(__file__).resolve().parents[1] / "fixtures" / "configs" / "sim"


@pytest.fixture(scope="module")
def ws_base(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    served = serve(SIM, tmp_path_factory.mktemp("ws") / "log.txt")
    yield served.base.replace("http://", "ws://")
    served.stop()


async def recv(ws: Any) -> dict[str, Any]:
    return json.loads(await asyncio.wait_for(ws.recv(), 10))


async def test_seed_client_flow_over_real_sockets(ws_base: str) -> None:
    async with websockets.connect(f"{ws_base}/ws") as ws:
        await ws.send(json.dumps({"type": "REGISTER", "source": "e2e"}))
        assert (await recv(ws))["payload"] == {"status": "registered", "source": "e2e"}
        for msg_id in ("a", "b"):
            await ws.send(json.dumps({"type": "LLM_REQUEST", "id": msg_id, "source": "e2e", "payload": {
                "message": f"question {msg_id}", "context": f"e2e:{msg_id}", "task_type": "chat",
                "component": None, "streaming": True}}))
        got: dict[str, list[dict[str, Any]]] = {"a": [], "b": []}
        done: set[str] = set()
        while done != {"a", "b"}:
            msg = await recv(ws)
            got[msg["id"]].append(msg)
            if msg["type"] == "UPDATE" and msg["payload"].get("isTyping") is False:
                done.add(msg["id"])
        await ws.send(json.dumps({"type": "STATUS", "id": "s"}))
        status = await recv(ws)
    for msg_id, mine in got.items():
        assert mine[0]["payload"]["isTyping"] is True and mine[-2]["type"] == "RESPONSE"
        chunks = "".join(m["payload"].get("chunk", "") for m in mine if m["type"] == "UPDATE")
        assert chunks == mine[-2]["payload"]["message"] and f'"question {msg_id}"' in chunks
        assert mine[-2]["payload"]["context"] == f"e2e:{msg_id}"
    assert status["payload"]["status"] == "ok" and status["id"] == "s"


async def test_legacy_streaming_over_real_sockets(ws_base: str) -> None:
    async with websockets.connect(f"{ws_base}/ws/rhetor/streaming?api_key=none") as ws:
        await ws.send(json.dumps({"prompt": "What is Tekton?", "temperature": 0.7, "stream": True}))
        text, final = "", None
        while final is None:
            msg = await recv(ws)
            if msg["type"] == "content_chunk":
                text += msg["text"]
            else:
                final = msg
    assert final["type"] == "content_complete" and final["text"] == text and text.endswith('"What is Tekton?"')
