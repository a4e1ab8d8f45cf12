"""The core endpoints: ``GET /health``, ``POST /message`` and ``POST /stream`` (SSE)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

from litestar import Response, get, post
from litestar.datastructures import State
from litestar.response import Stream

import rhetor
from rhetor.engine.engine import Engine
from rhetor.errors import RhetorError
from rhetor.server.state import server_state
from rhetor.server.wire import MessageIn, completion_body, error_event, final_event, sse, timestamp

__all__ = ["HANDLERS"]

_SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


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


async def _stream_body(engine: Engine, body: MessageIn, request_id: str) -> AsyncIterator[bytes]:
    request = body.to_request(request_id, stream=True)
    context = body.context_id
    try:
        async for item in engine.stream(request, body.pipeline):
            if isinstance(item, str):
                yield sse({"chunk": item, "done": False, "context": context})
            else:
                yield final_event(item, context, request_id)
    except RhetorError as exc:
        yield error_event(exc, context, request_id)


def _sse_response(engine: Engine, body: MessageIn, request_id: str) -> Stream:
    return Stream(_stream_body(engine, body, request_id), media_type="text/event-stream",
                  headers={**_SSE_HEADERS, "X-Request-ID": request_id})


@post("/message", status_code=200)
async def message(data: MessageIn, state: State) -> Response[Any]:
    engine = server_state(state).engine
    request_id = uuid.uuid4().hex
    if data.streaming:
        return _sse_response(engine, data, request_id)
    result = await engine.run(data.to_request(request_id, stream=False), data.pipeline)
    return Response(completion_body(result, data.context_id, request_id), headers={"X-Request-ID": request_id})


@post("/stream", status_code=200)
async def stream(data: MessageIn, state: State) -> Stream:
    return _sse_response(server_state(state).engine, data, uuid.uuid4().hex)


HANDLERS = [health, message, stream]
