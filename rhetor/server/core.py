"""The documented core endpoints: ``/``, ``/health``, ``/message``, ``/stream``, ``/chat``.

``/message`` and ``/chat`` answer in the consistent format `{message, model, provider, context,
finished, timestamp}` plus usage, cost, attempts, routing explanation and trace; with
``streaming: true`` they stream like ``/stream``: SSE `data: {"chunk", "done": false}` events, then
one `done: true` event with the whole message (or an `error` event: never a clean end after a failure).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from litestar import Request, Response, get, post
from litestar.datastructures import State

import rhetor
from rhetor.engine.engine import Engine
from rhetor.engine.run import RunResult
from rhetor.errors import RhetorError
from rhetor.server.event_stream import EventStream
from rhetor.server.observe import request_id_of
from rhetor.server.security import bind_component
from rhetor.server.state import server_state
from rhetor.server.wire import ChatIn, ChunkEvents, MessageIn, completion_body, error_event, final_event, timestamp
from rhetor.stages.base import Request as EngineRequest

__all__ = ["HANDLERS", "answer", "primed_stream"]

_SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}

ENDPOINTS = {
    "health": "GET /health",
    "providers": "GET /providers, POST /provider",
    "message": "POST /message",
    "stream": "POST /stream",
    "chat": "POST /chat",
    "openai": "POST /v1/chat/completions, GET /v1/models",
    "websocket": "/ws, /ws/rhetor/streaming",
    "legacy": "POST /api/rhetor/completions, POST /api/rhetor/chat",
    "traces": "GET /traces/{request_id}",
    "metrics": "GET /metrics",
    "openapi": "GET /schema",
}


@get("/", sync_to_thread=False)
def root(state: State) -> dict[str, Any]:
    engine = server_state(state).engine
    return {"name": "Rhetor", "description": "LLM gateway for Tekton", "version": rhetor.__version__,
            "config_version": engine.version, "endpoints": ENDPOINTS}


@get("/health", sync_to_thread=False)
def health(state: State) -> dict[str, Any]:
    engine = server_state(state).engine
    providers = {name: {"kind": p.kind, "available": (a := p.availability()).available, "reason": a.reason}
                 for name, p in engine.providers.items()}
    return {
        "status": "ok",
        "service": "rhetor",
        "version": rhetor.__version__,
        "config_version": engine.version,
        "pipelines": sorted(engine.pipelines),
        "providers": providers,
        "circuits": engine.runtime.circuits.snapshot(),
        "timestamp": timestamp(),
    }


async def _events(first: list[str | RunResult], rest: AsyncIterator[list[str | RunResult]],
                  request: EngineRequest) -> AsyncIterator[bytes]:
    """The SSE events of a streamed run; the chunks of one batch (``Engine.stream_batches``) in one write."""
    context = request.options.context_id
    chunk = ChunkEvents(lambda text: {"chunk": text, "done": False, "context": context})
    try:
        batch = first
        while True:
            out = []
            for item in batch:
                if isinstance(item, str):
                    out.append(chunk(item))
                else:
                    out.append(final_event(item, context, request.request_id))
                    yield b"".join(out)
                    return
            yield b"".join(out)
            batch = await anext(rest)
    except RhetorError as exc:
        yield error_event(exc, context, request.request_id)
    finally:
        await rest.aclose()  # type: ignore[attr-defined]


async def primed_stream(engine: Engine, request: EngineRequest, pipeline: str | None
                        ) -> tuple[list[str | RunResult], AsyncIterator[list[str | RunResult]]]:
    """Start a streamed run (``Engine.stream_batches``) and wait for its first batch, so that a request refused
    before any output (budget exceeded, no model available, bad request) is a plain HTTP error, not a 200 stream."""
    stream = engine.stream_batches(request, pipeline)
    try:
        return await anext(stream), stream
    except BaseException:
        await stream.aclose()  # type: ignore[attr-defined]
        raise


async def answer(state: State, http: Request[Any, Any, Any], body: MessageIn | ChatIn,
                 *, stream: bool) -> Response[Any]:
    """Run one request from a generation endpoint: JSON, or SSE when ``stream``."""
    rhetor_state = server_state(state)
    engine = rhetor_state.engine
    request_id = request_id_of(http.scope)
    request = bind_component(http.scope, body.to_request(request_id, stream=stream, active=rhetor_state.active))
    if stream:
        first, rest = await primed_stream(engine, request, body.pipeline)
        return EventStream(_events(first, rest, request), media_type="text/event-stream", headers=_SSE_HEADERS)
    result = await engine.run(request, body.pipeline)
    return Response(completion_body(result, body.context_id, request_id))


@post("/message", status_code=200)
async def message(data: MessageIn, state: State, request: Request[Any, Any, Any]) -> Response[Any]:
    return await answer(state, request, data, stream=data.streaming)


@post("/stream", status_code=200)
async def stream(data: MessageIn, state: State, request: Request[Any, Any, Any]) -> Response[Any]:
    return await answer(state, request, data, stream=True)


@post("/chat", status_code=200)
async def chat(data: ChatIn, state: State, request: Request[Any, Any, Any]) -> Response[Any]:
    return await answer(state, request, data, stream=data.streaming)


HANDLERS = [root, health, message, stream, chat]
