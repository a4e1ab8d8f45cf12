"""Operations: ``GET /metrics``, ``GET /traces/{request_id}``, ``POST /admin/reload``.

Reload (this endpoint, or SIGHUP to the process) loads and compiles the configuration again and swaps
the engine only if it validates; otherwise the old engine keeps serving and the diagnostics are returned.
Requests already running finish on the engine they started with; the old engine's provider clients are
closed after a grace period.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from pathlib import Path
from typing import Any

from litestar import MediaType, Request, Response, get, post
from litestar.datastructures import State

from rhetor.engine.engine import Engine, load_engine
from rhetor.errors import ConfigError, NotFoundError
from rhetor.server.security import ForbiddenError
from rhetor.server.state import server_state

__all__ = ["HANDLERS", "Reloader"]

log = logging.getLogger("rhetor.admin")


class Reloader:
    """Swaps the server's engine for a freshly compiled one, only when the new config validates."""

    def __init__(self, config_dir: Path | None, env: dict[str, str] | None, on_new_engine: Any,
                 grace_s: float = 30.0, resources: Any = None) -> None:
        self.config_dir = config_dir
        self.resources = resources
        self.env = env
        self.on_new_engine = on_new_engine
        self.grace_s = grace_s
        self._lock = asyncio.Lock()
        self.retired: list[Engine] = []

    async def reload(self, state: State) -> dict[str, Any]:
        if self.config_dir is None:
            raise ForbiddenError("this server was not started from a config directory; nothing to reload")
        async with self._lock:
            engine, diags = await asyncio.to_thread(load_engine, self.config_dir, self.env,
                                                    resources=self.resources)
            if engine is None:
                errors = [d for d in diags if d.severity == "error"]
                log.warning("reload refused", extra={"fields": {"errors": len(errors)}})
                raise ConfigError(errors)
            rhetor = server_state(state)
            old, rhetor.engine = rhetor.engine, engine
            self.on_new_engine(engine)
            self.retired.append(old)
            asyncio.get_running_loop().call_later(self.grace_s, lambda: asyncio.ensure_future(self._retire(old)))
            log.info("config reloaded", extra={"fields": {"from": old.version, "to": engine.version}})
            return {"reloaded": True, "config_version": engine.version, "previous_version": old.version,
                    "warnings": [d.to_dict() for d in diags]}

    async def _retire(self, engine: Engine) -> None:
        if engine in self.retired:
            self.retired.remove(engine)
            await engine.aclose()

    async def close(self) -> None:
        for engine in list(self.retired):
            await self._retire(engine)


def _is_loopback(request: Request[Any, Any, Any]) -> bool:
    host = request.client.host if request.client else ""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host in ("localhost", "testclient")


@post("/admin/reload", status_code=200)
async def admin_reload(request: Request[Any, Any, Any], state: State) -> dict[str, Any]:
    """Reload the configuration. Needs an API key when keys are configured, else a loopback client."""
    if not state.auth_enabled and not _is_loopback(request):
        raise ForbiddenError("reload is allowed from this machine only when no API key is configured")
    reloader: Reloader = state.reloader
    return await reloader.reload(state)


@get("/traces/{request_id:str}", sync_to_thread=False)
def trace(request_id: str, state: State) -> dict[str, Any]:
    record = server_state(state).traces.get(request_id)
    if record is None:
        raise NotFoundError(f"no trace for request {request_id!r} (only recent requests are kept)",
                            field="request_id")
    return record


@get("/metrics", sync_to_thread=False, media_type=MediaType.TEXT)
def metrics(state: State) -> Response[str]:
    return Response(state.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")


HANDLERS = [admin_reload, trace, metrics]
