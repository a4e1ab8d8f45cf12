"""The Litestar application: thin handlers over the engine, one port for HTTP and SSE.

State lives on ``app.state`` (set up by ``create_app``, released in the lifespan); there are no
module-level globals. Every error leaves as ``{"error": {"code", "message", "details"}}``.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

from litestar import Litestar, MediaType, Request, Response, get, post
from litestar.datastructures import State
from litestar.exceptions import HTTPException, ValidationException
from litestar.response import Stream

import rhetor
from rhetor.engine.engine import Engine
from rhetor.errors import RhetorError
from rhetor.server.wire import MessageIn, completion_body, error_event, final_event, timestamp

__all__ = ["create_app"]

_SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def _engine(state: State) -> Engine:
    engine: Engine = state.engine
    return engine


@get("/health", sync_to_thread=False)
def health(state: State) -> dict[str, Any]:
    engine = _engine(state)
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
    from rhetor.server.wire import sse

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
    engine = _engine(state)
    request_id = uuid.uuid4().hex
    if data.streaming:
        return _sse_response(engine, data, request_id)
    result = await engine.run(data.to_request(request_id, stream=False), data.pipeline)
    return Response(completion_body(result, data.context_id, request_id), headers={"X-Request-ID": request_id})


@post("/stream", status_code=200)
async def stream(data: MessageIn, state: State) -> Stream:
    return _sse_response(_engine(state), data, uuid.uuid4().hex)


def _rhetor_error(_: Request[Any, Any, Any], exc: RhetorError) -> Response[Any]:
    return Response(exc.to_dict(), status_code=exc.status, media_type=MediaType.JSON)


def _validation_error(_: Request[Any, Any, Any], exc: ValidationException) -> Response[Any]:
    problems = exc.extra if isinstance(exc.extra, list) else []
    fields = [p.get("key") for p in problems if isinstance(p, dict) and p.get("key")]
    message = "; ".join(f"{p.get('key')}: {p.get('message')}" for p in problems if isinstance(p, dict)) \
        or str(exc.detail)
    body = {"error": {"code": "bad-request", "message": message,
                      "details": {"field": fields[0] if fields else None, "errors": problems}}}
    return Response(body, status_code=400, media_type=MediaType.JSON)


def _http_error(_: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    codes = {400: "bad-request", 404: "not-found", 405: "method-not-allowed", 413: "body-too-large"}
    code = codes.get(exc.status_code, "http-error")
    body = {"error": {"code": code, "message": str(exc.detail), "details": {}}}
    return Response(body, status_code=exc.status_code, media_type=MediaType.JSON)


def create_app(engine: Engine) -> Litestar:
    """The app for ``engine``; the engine's providers are closed when the app shuts down."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await engine.aclose()

    return Litestar(
        route_handlers=[health, message, stream],
        state=State({"engine": engine}),
        lifespan=[lifespan],
        exception_handlers={
            RhetorError: _rhetor_error,
            ValidationException: _validation_error,
            HTTPException: _http_error,
        },
        request_max_body_size=8 * 1024 * 1024,
    )
