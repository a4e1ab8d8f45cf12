"""API keys for every endpoint but ``/health`` (HTTP and WebSocket), compared in constant time.

A key from the keys file may belong to a component: its requests are that component's (when they
name none) and may not name another (403), so one component cannot spend another's budget.

A key arrives as ``X-API-Key``, ``Authorization: Bearer <key>``, or (WebSocket, as the seeds' clients
send it) the ``api_key`` query parameter. Keys are hashed once; the comparison is between digests with
``hmac.compare_digest`` for every configured key, so timing says nothing about which or how much matched.
A wrong or missing key gets a 401 (WebSocket: close code 4401) with no detail; keys are never logged.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import replace
from urllib.parse import parse_qs

from litestar.enums import ScopeType
from litestar.middleware import ASGIMiddleware
from litestar.types import ASGIApp, Receive, Scope, Send

from rhetor.errors import RhetorError
from rhetor.server.settings import ApiKey
from rhetor.stages.base import Request

__all__ = ["AuthMiddleware", "ForbiddenError", "bind_component"]


class ForbiddenError(RhetorError):
    code = "forbidden"
    status = 403


def bind_component(scope: Scope, request: Request) -> Request:
    """``request`` with the component its API key belongs to (if any); refuses another component."""
    owner = scope.get("state", {}).get("auth_component")
    if owner is None:
        return request
    asked = request.options.component
    if asked is not None and asked != owner:
        raise ForbiddenError(f"this API key belongs to component {owner!r}, not {asked!r}",
                             details={"field": "component"})
    return replace(request, options=replace(request.options, component=owner))

_OPEN_PATHS = frozenset({"/health"})
_BODY = json.dumps({"error": {"code": "unauthorized", "message": "missing or invalid API key",
                              "details": {}, "type": "authentication_error", "param": None}}).encode()


def _presented(scope: Scope) -> str | None:
    headers = dict(scope.get("headers", ()))
    if b"x-api-key" in headers:
        return headers[b"x-api-key"].decode("latin-1")
    auth = headers.get(b"authorization", b"").decode("latin-1")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip()
    if scope["type"] == ScopeType.WEBSOCKET:
        values = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("api_key")
        return values[0] if values else None
    return None


class AuthMiddleware(ASGIMiddleware):
    scopes = (ScopeType.HTTP, ScopeType.WEBSOCKET)

    def __init__(self, keys: tuple[ApiKey, ...]) -> None:
        self.keys = keys

    def _match(self, presented: str | None) -> ApiKey | None:
        digest = hashlib.sha256((presented or "").encode()).digest()
        found = None
        for key in self.keys:  # no early exit: every key is compared
            if hmac.compare_digest(digest, key.digest) and presented is not None:
                found = key
        return found

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        if not self.keys or scope.get("path") in _OPEN_PATHS or scope.get("method") == "OPTIONS":
            await next_app(scope, receive, send)
            return
        key = self._match(_presented(scope))
        if key is not None:
            scope.setdefault("state", {})["auth_component"] = key.component
            await next_app(scope, receive, send)
            return
        if scope["type"] == ScopeType.WEBSOCKET:
            await send({"type": "websocket.close", "code": 4401, "reason": "unauthorized"})
            return
        await send({"type": "http.response.start", "status": 401,
                    "headers": [(b"content-type", b"application/json"), (b"www-authenticate", b"Bearer")]})
        await send({"type": "http.response.body", "body": _BODY})
