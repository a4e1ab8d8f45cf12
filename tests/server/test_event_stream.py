"""Every SSE surface (``/stream``, ``/message`` and ``/chat`` with ``streaming``, ``/v1/chat/completions``, the legacy
endpoints) driven at the ASGI level, so each body message is seen as the app sends it: chunks go out as they
arrive, a client that hangs up stops the provider call and the response ends quietly, any other cancellation (the
server stopping) goes on up, and no task the response made outlives it (``rhetor.server.event_stream``)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Mapping
from typing import Any

import pytest

from rhetor.config.models import ProviderSpec
from rhetor.engine.engine import build_engine
from rhetor.engine.runtime import Clock
from rhetor.providers import Provider, build_provider
from rhetor.providers.base import ProviderRequest, StreamDelta, StreamEnd
from rhetor.providers.simulated import SimulatedProvider
from rhetor.server.app import create_app
from rhetor.types import Usage
from tests.server.conftest import SIM_DIR

_CHAT = [{"role": "user", "content": "hi"}]
SURFACES = {
    "/v1/chat/completions": {"model": "simulated", "messages": _CHAT, "stream": True},
    "/stream": {"message": "hi", "model": "simulated"},
    "/message": {"message": "hi", "model": "simulated", "streaming": True},
    "/chat": {"messages": _CHAT, "model": "simulated", "streaming": True},
    "/api/rhetor/completions": {"prompt": "hi", "model": "simulated", "stream": True},
    "/api/rhetor/chat": {"messages": _CHAT, "model": "simulated", "stream": True},
}
ENDS = {"/v1/chat/completions": b"data: [DONE]\n\n"}  # the others end with their `"done": true` event


class GatedProvider(SimulatedProvider):
    """Streams "first", then waits for ``gate`` before the rest."""

    gate: asyncio.Event
    cancelled: asyncio.Event

    async def stream(self, request: ProviderRequest) -> AsyncIterator[StreamDelta | StreamEnd]:  # type: ignore[override]
        yield StreamDelta("first")
        try:
            await self.gate.wait()
        except asyncio.CancelledError:
            self.cancelled.set()
            raise
        yield StreamDelta(" second")
        yield StreamEnd(usage=Usage(1, 2), finish_reason="stop")


class _Exchange:
    """One streamed POST to ``path``, its client staying until the response is complete or until ``leave``."""

    def __init__(self, path: str) -> None:
        self.path, self.body = path, json.dumps(SURFACES[path]).encode()
        self.gate, self.cancelled = asyncio.Event(), asyncio.Event()

        def factory(name: str, spec: ProviderSpec, env: Mapping[str, str], clock: Clock) -> Provider:
            provider = build_provider(name, spec, env, clock)
            if isinstance(provider, SimulatedProvider):
                provider = GatedProvider(name, spec, env)
                provider.gate, provider.cancelled = self.gate, self.cancelled
            return provider

        self.app = create_app(build_engine(SIM_DIR, env={}, provider_factory=factory))
        self.status: int | None = None
        self.sent: list[bytes] = []
        self.ended = False  # the body's last message (more_body false) was sent
        self.first_out, self.leave = asyncio.Event(), asyncio.Event()
        self._requested = False

    async def receive(self) -> dict[str, Any]:
        if not self._requested:
            self._requested = True
            return {"type": "http.request", "body": self.body, "more_body": False}
        await self.leave.wait()  # as an ASGI server does: disconnect once the response is complete, or the client left
        return {"type": "http.disconnect"}

    async def send(self, message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
        if message["type"] == "http.response.body":
            self.sent.append(message.get("body", b""))
            if b'"first"' in self.sent[-1]:
                self.first_out.set()
            if not message.get("more_body", False):
                self.ended = True
                self.leave.set()

    def start(self) -> asyncio.Task[None]:
        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
                 "scheme": "http", "path": self.path, "raw_path": self.path.encode(), "query_string": b"",
                 "root_path": "", "headers": [(b"content-type", b"application/json"), (b"host", b"t")],
                 "client": ("127.0.0.1", 1), "server": ("t", 80)}
        return asyncio.create_task(self.app(scope, self.receive, self.send))  # type: ignore[arg-type]


async def _settled(before: set[asyncio.Task[Any]]) -> set[asyncio.Task[Any]]:
    """The tasks started since ``before`` that are still pending once the loop had a few turns."""
    for _ in range(5):
        await asyncio.sleep(0)
    return {t for t in asyncio.all_tasks() - before if not t.done() and t is not asyncio.current_task()}


@pytest.mark.parametrize("path", list(SURFACES))
async def test_each_chunk_goes_out_as_it_arrives_and_the_stream_ends(path: str) -> None:
    before = asyncio.all_tasks()
    ex = _Exchange(path)
    task = ex.start()
    await asyncio.wait_for(ex.first_out.wait(), 5)  # the first chunk is out while the provider still holds the rest
    assert ex.status == 200 and not task.done() and b"second" not in b"".join(ex.sent)
    ex.gate.set()
    await asyncio.wait_for(task, 5)
    body = b"".join(ex.sent)
    assert b'" second"' in body and ex.ended and not ex.cancelled.is_set()
    assert body.endswith(ENDS[path]) if path in ENDS else b'"done":true' in body.rsplit(b"data: ", 1)[-1]
    assert await _settled(before) == set()  # the hang-up watcher went with the response


@pytest.mark.parametrize("path", list(SURFACES))
async def test_a_client_hanging_up_stops_the_provider_call_and_the_response_ends_quietly(path: str) -> None:
    before = asyncio.all_tasks()
    ex = _Exchange(path)
    task = ex.start()
    await asyncio.wait_for(ex.first_out.wait(), 5)
    ex.leave.set()  # the client disconnects
    await asyncio.wait_for(ex.cancelled.wait(), 5)
    await asyncio.wait_for(task, 5)  # returns: the hang-up is not an error of the app's
    assert not task.cancelled() and task.exception() is None
    assert task.cancelling() == 0  # the watcher's cancellation was taken back, so later timeouts still work
    assert b"second" not in b"".join(ex.sent) and not ex.ended
    assert await _settled(before) == set()


async def test_a_cancellation_that_is_not_a_hang_up_goes_on_up() -> None:
    """The server stopping cancels the request's task: the stream stops and the task ends cancelled (the
    response does not take that cancellation for its client's hang-up)."""
    before = asyncio.all_tasks()
    ex = _Exchange("/stream")
    task = ex.start()
    await asyncio.wait_for(ex.first_out.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 5)
    assert ex.cancelled.is_set() and not ex.ended
    assert await _settled(before) == set()
