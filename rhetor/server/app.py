"""The Litestar application: thin handlers over the engine, one port for HTTP and SSE.

State lives on ``app.state`` (set up by ``create_app``, released in the lifespan); there are no
module-level globals. Every error leaves as ``{"error": {"code", "message", "details"}}``.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from litestar import Litestar, MediaType, Request, Response
from litestar.datastructures import State
from litestar.exceptions import HTTPException, ValidationException

from rhetor.engine.engine import Engine
from rhetor.errors import RhetorError
from rhetor.server import core, openai_compat, ws
from rhetor.server.state import ServerState

__all__ = ["create_app"]

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

    rhetor_state = ServerState(engine)

    @contextlib.asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await rhetor_state.engine.aclose()

    return Litestar(
        route_handlers=[*core.HANDLERS, *openai_compat.HANDLERS, *ws.HANDLERS],
        state=State({"rhetor": rhetor_state}),
        lifespan=[lifespan],
        exception_handlers={
            RhetorError: _rhetor_error,
            ValidationException: _validation_error,
            HTTPException: _http_error,
        },
        request_max_body_size=8 * 1024 * 1024,
    )
