"""The Litestar application: every surface on one port, thin handlers over the engine.

State lives on ``app.state`` (``rhetor``: engine, active choice, traces; ``metrics``; ``reloader``),
set up by ``create_app`` and released in the lifespan; there are no module-level globals. Every error
leaves as ``{"error": {"code", "message", "details"}}`` with the status of its class.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from litestar import Litestar, MediaType, Request, Response
from litestar.config.cors import CORSConfig
from litestar.datastructures import State
from litestar.exceptions import HTTPException, ValidationException
from litestar.openapi import OpenAPIConfig

import rhetor
from rhetor.budget import BudgetLedger
from rhetor.engine.engine import Engine
from rhetor.errors import RhetorError, error_type
from rhetor.server import admin, budget_api, catalog, content_api, core, legacy, openai_compat, ws
from rhetor.server.admin import Reloader
from rhetor.server.hermes import register_forever
from rhetor.server.observe import Metrics, ObserveMiddleware, RunRecorder
from rhetor.server.security import AuthMiddleware
from rhetor.server.settings import ServerSettings
from rhetor.server.state import ServerState
from rhetor.stages.context import ContextLoadStage

__all__ = ["create_app"]

log = logging.getLogger("rhetor.server")


def _rhetor_error(_: Request[Any, Any, Any], exc: RhetorError) -> Response[Any]:
    return Response(exc.to_dict(), status_code=exc.status, media_type=MediaType.JSON)


def _validation_error(_: Request[Any, Any, Any], exc: ValidationException) -> Response[Any]:
    problems = exc.extra if isinstance(exc.extra, list) else []
    fields = [p.get("key") for p in problems if isinstance(p, dict) and p.get("key")]
    message = "; ".join(f"{p.get('key')}: {p.get('message')}" for p in problems if isinstance(p, dict)) \
        or str(exc.detail)
    body = {"error": {"code": "bad-request", "message": message,
                      "details": {"field": fields[0] if fields else None, "errors": problems},
                      "type": error_type(400), "param": fields[0] if fields else None}}
    return Response(body, status_code=400, media_type=MediaType.JSON)


def _http_error(_: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    codes = {400: "bad-request", 401: "unauthorized", 403: "forbidden", 404: "not-found",
             405: "method-not-allowed", 413: "body-too-large"}
    code = codes.get(exc.status_code, "http-error")
    body = {"error": {"code": code, "message": str(exc.detail), "details": {}, "type": error_type(exc.status_code),
                      "param": None}}
    return Response(body, status_code=exc.status_code, media_type=MediaType.JSON, headers=exc.headers)


async def _expire_contexts(engine: Engine) -> int:
    """Delete contexts idle past their TTL (context_load stages' ``ttl_s``/``ttl_by_component``).

    Per component with its own TTL; for all others the longest TTL declared, so a sweep never
    removes a context early (loading one applies its exact TTL).
    """
    now = datetime.now(UTC)
    removed = 0
    for pipeline in engine.pipelines.values():
        for compiled in pipeline.stages.values():
            if not isinstance(compiled.stage, ContextLoadStage):
                continue
            config = compiled.stage.config
            contexts = engine.resources.storage.contexts
            for component, ttl in config.ttl_by_component.items():
                removed += await contexts.expire(before=now - timedelta(seconds=ttl), component=component)
            if config.ttl_s is not None:
                longest = max([config.ttl_s, *config.ttl_by_component.values()])
                removed += await contexts.expire(before=now - timedelta(seconds=longest))
    return removed


async def _reconcile_forever(state: ServerState, every_s: float = 60.0) -> None:
    """Expire reservations left by crashed processes and contexts past their TTL: at start, then every minute."""
    while True:
        engine = state.engine
        ledger = BudgetLedger.from_config(engine.resources.storage.ledger, engine.config.budgets)
        expired = await ledger.reconcile()
        if expired:
            log.warning("expired reservations reconciled", extra={"fields": {"count": len(expired)}})
        removed = await _expire_contexts(engine)
        if removed:
            log.info("expired contexts removed", extra={"fields": {"count": removed}})
        await asyncio.sleep(every_s)


def create_app(engine: Engine, *, settings: ServerSettings | None = None, config_dir: Path | None = None,
               env: dict[str, str] | None = None) -> Litestar:
    """The app serving ``engine``; ``config_dir`` enables reload (SIGHUP, ``POST /admin/reload``)."""
    settings = settings or ServerSettings(hermes_url=None)
    rhetor_state = ServerState(engine)
    metrics = Metrics()
    recorder = RunRecorder(rhetor_state, metrics)

    def adopt(new_engine: Engine) -> None:
        new_engine.observers.append(recorder)
        model = rhetor_state.active.get("model")
        if model and model not in new_engine.config.providers.models:
            rhetor_state.active = {}

    adopt(engine)
    reloader = Reloader(config_dir, env, adopt, grace_s=max(30.0, settings.drain_seconds),
                        resources=engine.resources)

    @contextlib.asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        await engine.resources.ensure_started()
        reconciler = asyncio.create_task(_reconcile_forever(rhetor_state))
        loop = asyncio.get_running_loop()
        with contextlib.suppress(ValueError, RuntimeError, NotImplementedError):  # not the main thread
            loop.add_signal_handler(signal.SIGHUP, lambda: asyncio.ensure_future(_sighup(app.state)))
        hermes = None
        if settings.hermes_url:
            hermes = asyncio.create_task(register_forever(settings.hermes_url, settings.public_url))
        try:
            yield
        finally:
            reconciler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reconciler
            if hermes is not None:
                hermes.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await hermes
            with contextlib.suppress(ValueError, RuntimeError, NotImplementedError):
                loop.remove_signal_handler(signal.SIGHUP)
            await reloader.close()
            await rhetor_state.engine.aclose()
            await rhetor_state.engine.resources.close()

    async def _sighup(state: State) -> None:
        try:
            await reloader.reload(state)
        except RhetorError as exc:
            log.warning("SIGHUP reload refused; still serving the previous config",
                        extra={"fields": {"code": exc.code, "message": exc.message}})

    cors = None
    if settings.cors_origins:
        cors = CORSConfig(allow_origins=list(settings.cors_origins), allow_methods=["GET", "POST", "DELETE", "OPTIONS"],
                          allow_headers=["content-type", "authorization", "x-api-key", "x-request-id"],
                          expose_headers=["x-request-id"])
    return Litestar(
        route_handlers=[*core.HANDLERS, *catalog.HANDLERS, *legacy.HANDLERS, *admin.HANDLERS,
                        *budget_api.HANDLERS, *content_api.HANDLERS, *openai_compat.HANDLERS, *ws.HANDLERS],
        state=State({"rhetor": rhetor_state, "metrics": metrics, "reloader": reloader,
                     "auth_enabled": bool(settings.api_keys)}),
        lifespan=[lifespan],
        # No keys, no auth layer: one less middleware wrapped around every request.
        middleware=[ObserveMiddleware(metrics), *([AuthMiddleware(settings.api_keys)] if settings.api_keys else [])],
        cors_config=cors,
        exception_handlers={
            RhetorError: _rhetor_error,
            ValidationException: _validation_error,
            HTTPException: _http_error,
        },
        request_max_body_size=settings.max_body_bytes,
        openapi_config=OpenAPIConfig(title="Rhetor", version=rhetor.__version__, path="/schema"),
    )
