"""Chunks produced together leave together: ``Engine.stream_batches`` hands the SSE endpoints every chunk queued
since they last asked, and each endpoint writes a batch's events in one go; the first chunk of an answer is handed
over alone, as soon as it is there, not after the rest of the upstream read it came in. The events themselves must be
exactly those of chunks that come one at a time (``simulated`` paces one chunk per loop turn, ``simulated:burst``
produces them all at once, as one upstream read holding many does)."""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import AsyncTestClient

from rhetor.engine.engine import Engine, _Handoff, build_engine
from rhetor.engine.run import RunResult
from rhetor.errors import MidStreamError
from rhetor.server.app import create_app
from rhetor.stages.base import Request
from rhetor.types import RequestOptions
from tests.server.conftest import SIM_DIR, sse_events

BURST_MODELS = """\
  burst: {provider: simulated, id: "simulated:burst", context_window: 1000, price: {input: 0, output: 0}}
  burst-cut: {provider: simulated, id: "simulated:midstream:burst", context_window: 1000,
              price: {input: 1, output: 2}}
"""
PROMPT = "say these words back to me one small piece at a time"


@pytest.fixture
def config(tmp_path: Path) -> Path:
    shutil.copytree(SIM_DIR, tmp_path / "config")
    providers = tmp_path / "config" / "providers.yaml"
    providers.write_text(providers.read_text(encoding="utf-8") + BURST_MODELS, encoding="utf-8")
    return tmp_path / "config"


@pytest.fixture
async def engine(config: Path) -> AsyncIterator[Engine]:
    engine = build_engine(config, env={})
    yield engine
    await engine.aclose()


@pytest.fixture
async def client(config: Path) -> AsyncIterator[AsyncTestClient]:
    async with AsyncTestClient(app=create_app(build_engine(config, env={}))) as c:
        yield c


async def batches(engine: Engine, model: str) -> list[list[Any]]:
    request = Request.from_text(PROMPT, RequestOptions(model=model, stream=True))
    return [batch async for batch in engine.stream_batches(request)]


async def test_the_first_chunk_comes_alone_and_those_produced_together_after_it_in_one_batch(engine: Engine) -> None:
    got = await batches(engine, "burst")
    assert len(got[0]) == 1 and isinstance(got[0][0], str)  # the first token is handed over before the rest
    texts = [item for item in got[1] if isinstance(item, str)]
    assert len(texts) >= 3 and len(texts) == len(got[1]) - (got[1][-1] is got[-1][-1])
    assert isinstance(got[-1][-1], RunResult) and all(isinstance(i, str) for b in got for i in b[:-1])
    assert "".join(i for b in got for i in b if isinstance(i, str)) == got[-1][-1].completion.text


async def test_chunks_produced_apart_come_one_batch_each(engine: Engine) -> None:
    got = await batches(engine, "simulated")
    assert len(got) >= 4
    assert all(sum(isinstance(i, str) for i in batch) <= 1 for batch in got)
    assert all(batch for batch in got) and isinstance(got[-1][-1], RunResult)


async def test_a_failure_comes_after_the_batch_of_chunks_before_it(engine: Engine) -> None:
    stream = engine.stream_batches(Request.from_text(PROMPT, RequestOptions(model="burst-cut", stream=True)))
    first, rest = await anext(stream), await anext(stream)
    assert len(first) == 1 and rest and all(isinstance(i, str) for i in first + rest)
    with pytest.raises(MidStreamError) as info:
        await anext(stream)
    assert info.value.partial_text == "".join(first + rest)


async def test_stream_items_are_the_batches_flattened(engine: Engine) -> None:
    items = [i async for i in engine.stream(Request.from_text(PROMPT, RequestOptions(model="burst", stream=True)))]
    flat = [i for b in await batches(engine, "burst") for i in b]
    assert items[:-1] == flat[:-1] and isinstance(items[-1], RunResult)


def events_of(body: str) -> list[dict[str, Any]]:
    """The JSON events of an SSE body (``[DONE]`` left out)."""
    return sse_events(body.replace("data: [DONE]\n\n", ""))


def _same_answer(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What must not differ between a paced and a burst answer: all but ids, times, model names, routing."""
    drop = {"id", "created", "model", "model_id", "attempts", "request_id", "timestamp", "trace", "rhetor",
            "latency_ms", "routing_explanation"}
    return [{k: v for k, v in e.items() if k not in drop} for e in events]


@pytest.mark.parametrize(("path", "body"), [
    ("/stream", {"message": PROMPT}),
    ("/api/rhetor/completions", {"prompt": PROMPT, "stream": True}),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": PROMPT}], "stream": True,
                              "stream_options": {"include_usage": True}}),
])
async def test_a_burst_is_written_as_the_same_events(client: AsyncTestClient, path: str, body: dict[str, Any]) -> None:
    paced = await client.post(path, json={**body, "model": "simulated"})
    burst = await client.post(path, json={**body, "model": "burst"})
    assert paced.status_code == burst.status_code == 200
    assert paced.text.endswith("\n\n") and burst.text.endswith("\n\n")
    events = events_of(burst.text)
    assert len(events) >= 4
    assert _same_answer(events) == _same_answer(events_of(paced.text))
    if path.startswith("/v1"):
        assert burst.text.endswith("data: [DONE]\n\n")


@pytest.mark.parametrize("path", ["/stream", "/v1/chat/completions"])
async def test_a_burst_then_a_failure_ends_with_the_error_event(client: AsyncTestClient, path: str) -> None:
    body = ({"message": PROMPT, "model": "burst-cut"} if path == "/stream" else
            {"model": "burst-cut", "messages": [{"role": "user", "content": PROMPT}], "stream": True})
    r = await client.post(path, json=body)
    assert r.status_code == 200 and "[DONE]" not in r.text
    events = events_of(r.text)
    error = events[-1]["error"]
    if path == "/stream":
        sent = "".join(e["chunk"] for e in events[:-1])
    else:
        sent = "".join(e["choices"][0]["delta"].get("content", "") for e in events[:-1])
    assert error["code"] == "mid-stream-error" and sent and error["details"]["partial_text"] == sent


def _ws_answer(config: Path, model: str) -> list[dict[str, Any]]:
    """The messages of one streamed LLM_REQUEST on /ws, typing on to typing off, without ids and times."""
    from litestar.testing import TestClient

    with TestClient(app=create_app(build_engine(config, env={}))) as c, c.websocket_connect("/ws") as ws:
        ws.send_json({"type": "LLM_REQUEST", "id": "r1", "source": "test",
                      "payload": {"message": PROMPT, "model": model, "streaming": True}})
        got: list[dict[str, Any]] = []
        while not got or got[-1]["payload"].get("isTyping") is not False:
            got.append(ws.receive_json(timeout=10))
    return [{**m, "timestamp": None, "payload": _same_answer([m["payload"]])[0]} for m in got]


@pytest.mark.parametrize("model", ["burst", "burst-cut"])
def test_a_burst_on_the_websocket_is_the_same_messages(config: Path, model: str) -> None:
    named = json.dumps(_ws_answer(config, model)).replace('"burst-cut"', '"cut"')  # an error names its model
    burst = json.loads(named.replace('"simulated:midstream:burst"', '"simulated:midstream"'))
    paced = _ws_answer(config, "cut" if model == "burst-cut" else "simulated")
    assert sum("chunk" in m["payload"] for m in burst) >= 2
    assert burst == paced


async def test_the_handoff_gives_everything_put_since_the_last_take_and_survives_a_cancelled_take() -> None:
    handoff = _Handoff()
    handoff.put("a")
    handoff.put("b")
    assert await handoff.take() == ["a", "b"]  # put before the take: no wait
    waiting = asyncio.ensure_future(handoff.take())
    await asyncio.sleep(0)
    assert not waiting.done()  # nothing to take yet
    handoff.put("c")
    handoff.put("d")  # the consumer was woken by "c"; "d" joins the same batch
    assert await waiting == ["c", "d"]
    cancelled = asyncio.ensure_future(handoff.take())
    await asyncio.sleep(0)
    cancelled.cancel()
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    handoff.put("e")  # finds the cancelled waiter: nothing is lost
    assert await handoff.take() == ["e"]
