"""WebSocket endpoints, speaking the protocols the seeds' clients use.

``/ws`` carries JSON messages ``{type, id, source, payload}``; every reply names ``source: "rhetor"`` and
echoes the request's ``id`` (one is made up when a request has none):

- ``REGISTER`` → ``RESPONSE {payload: {status: "registered", source}}``
- ``STATUS`` → ``RESPONSE {payload: {status: "ok", service, version, config_version, pipelines, providers,
  circuits}}`` (what ``GET /health`` says)
- ``LLM_REQUEST {payload: {message, context, task_type, component, streaming, ...}}`` (any field of
  ``POST /message``; ``context`` is the context id) → ``UPDATE {status: "typing", isTyping: true, context}``,
  then when streaming one ``UPDATE {chunk, context, done: false}`` per chunk, then ``RESPONSE`` whose
  payload is ``POST /message``'s body (message, model, provider, usage, cost, context, ...), then
  ``UPDATE {status: "typing", isTyping: false, context}``.
- Anything wrong (bad JSON, unknown type, invalid payload, an engine error, a stream cut midway) →
  ``ERROR {payload: {code, message, details, context}}`` with the request's id (then typing false when
  typing had begun).

Each LLM_REQUEST runs as its own task, so several can be in flight on one socket; when the client goes
away every task of the socket is cancelled, and with it the provider calls.

``/ws/rhetor/streaming`` is the older protocol: ``{prompt, model?, temperature?, max_tokens?, stream?}`` →
``{"type": "content_chunk", "text"}`` … ``{"type": "content_complete", "text", model, provider, usage,
cost, ...}`` or ``{"type": "error", "error": {code, message, details}}``.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import Any

import msgspec
from litestar import WebSocket, websocket
from litestar.exceptions import WebSocketDisconnect
from pydantic import BaseModel, ConfigDict, Field, ValidationError

import rhetor
from rhetor.engine.engine import Engine
from rhetor.engine.run import RunResult
from rhetor.errors import RequestError, RhetorError
from rhetor.server.observe import request_id_of
from rhetor.server.security import bind_component
from rhetor.server.state import ServerState, server_state
from rhetor.server.wire import MessageIn, completion_body, timestamp

__all__ = ["HANDLERS"]

_TYPES = ("REGISTER", "LLM_REQUEST", "STATUS")


class _Connection:
    """One socket: sends one at a time, and the tasks of its requests in flight."""

    def __init__(self, socket: WebSocket[Any, Any, Any]) -> None:
        self.socket = socket
        self.open = True
        self._lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()
        self._count = 0

    @property
    def state(self) -> ServerState:
        return server_state(self.socket.app.state)  # read per request: a reload swaps the engine

    def next_request_id(self) -> str:
        self._count += 1
        return f"{request_id_of(self.socket.scope)}.{self._count}"

    async def send(self, *messages: dict[str, Any]) -> bool:
        """Send ``messages`` in order, with no other message between them; False once the client is gone."""
        async with self._lock:
            for message in messages:
                if not self.open:
                    break
                try:
                    await self.socket.send_text(msgspec.json.encode(message).decode())
                except (WebSocketDisconnect, OSError, RuntimeError):
                    self.open = False
        return self.open

    def spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def texts(self) -> AsyncIterator[str]:
        while True:
            event = await self.socket.receive()
            if event["type"] == "websocket.disconnect":
                return
            text = event.get("text")
            yield text if text is not None else (event.get("bytes") or b"").decode("utf-8", "replace")

    async def serve(self, handle: Callable[[_Connection, str], Awaitable[None]]) -> None:
        await self.socket.accept()
        try:
            async for text in self.texts():
                await handle(self, text)
        except WebSocketDisconnect:
            pass
        finally:
            self.open = False
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)


def _validate(model: type[BaseModel], data: dict[str, Any], prefix: str = "",
              renames: dict[str, str] | None = None) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = exc.errors(include_url=False, include_input=False, include_context=False)
        first = min(problems, key=lambda p: p["type"] != "extra_forbidden")
        field = ".".join(str(p) for p in first["loc"])
        field = (renames or {}).get(field, prefix + field)
        message = f"unknown field {field!r}" if first["type"] == "extra_forbidden" else f"{field}: {first['msg']}"
        raise RequestError(message, field=field) from None


# ---------------------------------------------------------------------------------------------- /ws


def _reply(kind: str, msg_id: Any, payload: dict[str, Any]) -> dict[str, Any]:
    return {"type": kind, "id": msg_id, "source": "rhetor", "payload": payload, "timestamp": timestamp()}


def _error(msg_id: Any, exc: RhetorError, context: str | None = None) -> dict[str, Any]:
    return _reply("ERROR", msg_id, {**exc.to_dict()["error"], "context": context})


def _typing(msg_id: Any, context: str | None, on: bool) -> dict[str, Any]:
    return _reply("UPDATE", msg_id, {"status": "typing", "isTyping": on, "context": context})


def _status(engine: Engine) -> dict[str, Any]:
    providers = {name: {"kind": p.kind, "available": (a := p.availability()).available, "reason": a.reason}
                 for name, p in engine.providers.items()}
    return {"status": "ok", "service": "rhetor", "version": rhetor.__version__, "config_version": engine.version,
            "pipelines": sorted(engine.pipelines), "providers": providers,
            "circuits": engine.runtime.circuits.snapshot()}


def _message_in(payload: Any) -> MessageIn:
    if not isinstance(payload, dict):
        raise RequestError("payload must be an object", field="payload")
    data = dict(payload)
    if "context" in data:
        if data.get("context_id") not in (None, data["context"]):
            raise RequestError("payload.context and payload.context_id differ", field="payload.context")
        data["context_id"] = data.pop("context")
        return _validate(MessageIn, data, "payload.", {"context_id": "payload.context"})
    return _validate(MessageIn, data, "payload.")


async def _run(conn: _Connection, body: MessageIn, on_chunks: Callable[[list[str]], Awaitable[bool]],
               request_id: str) -> RunResult | None:
    """The request's result; when streaming, the chunks that arrived together go to ``on_chunks`` together.
    None when the client left."""
    state = conn.state
    engine = state.engine
    request = bind_component(conn.socket.scope,
                             body.to_request(request_id, stream=body.streaming, active=state.active))
    if not body.streaming:
        return await engine.run(request, body.pipeline)
    batches = engine.stream_batches(request, body.pipeline)
    try:
        async for batch in batches:
            chunks = [item for item in batch if isinstance(item, str)]
            if chunks and not await on_chunks(chunks):
                return None
            if not isinstance(batch[-1], str):
                return batch[-1]
    finally:
        await batches.aclose()  # type: ignore[attr-defined]  # leaving early cancels the run
    return None


async def _llm_request(conn: _Connection, msg_id: Any, payload: Any) -> None:
    try:
        body = _message_in(payload)
    except RequestError as exc:
        await conn.send(_error(msg_id, exc, payload.get("context") if isinstance(payload, dict) else None))
        return
    context, request_id = body.context_id, conn.next_request_id()
    await conn.send(_typing(msg_id, context, True))

    def on_chunks(chunks: list[str]) -> Awaitable[bool]:
        return conn.send(*(_reply("UPDATE", msg_id, {"chunk": chunk, "context": context, "done": False})
                           for chunk in chunks))

    try:
        result = await _run(conn, body, on_chunks, request_id)
        if result is None:
            return
        await conn.send(_reply("RESPONSE", msg_id, completion_body(result, context, request_id)))
    except RhetorError as exc:
        await conn.send(_error(msg_id, exc, context))
    await conn.send(_typing(msg_id, context, False))


async def _dispatch(conn: _Connection, text: str) -> None:
    try:
        msg = json.loads(text)
    except ValueError as exc:
        await conn.send(_error(None, RequestError(f"the message is not valid JSON: {exc}")))
        return
    if not isinstance(msg, dict):
        await conn.send(_error(None, RequestError("a message must be a JSON object {type, id, source, payload}")))
        return
    kind, msg_id = msg.get("type"), msg.get("id")
    if kind == "LLM_REQUEST":
        conn.spawn(_llm_request(conn, msg_id if msg_id is not None else uuid.uuid4().hex, msg.get("payload")))
    elif kind == "REGISTER":
        await conn.send(_reply("RESPONSE", msg_id, {"status": "registered", "source": msg.get("source")}))
    elif kind == "STATUS":
        await conn.send(_reply("RESPONSE", msg_id, _status(conn.state.engine)))
    else:
        await conn.send(_error(msg_id, RequestError(f"unknown message type {kind!r}", field="type",
                                                    details={"known_types": list(_TYPES)})))


@websocket("/ws")
async def ws_endpoint(socket: WebSocket[Any, Any, Any]) -> None:
    await _Connection(socket).serve(_dispatch)


# ------------------------------------------------------------------------------- /ws/rhetor/streaming


class LegacyIn(BaseModel):
    """A request of the older streaming protocol."""

    model_config = ConfigDict(extra="forbid")
    prompt: str = Field(min_length=1, max_length=1_000_000)
    model: str | None = None
    temperature: float | None = Field(None, ge=0, le=2)
    max_tokens: int | None = Field(None, gt=0, le=1_000_000)
    stream: bool = True
    task_type: str | None = Field(None, max_length=64)
    component: str | None = Field(None, max_length=128)
    context_id: str | None = Field(None, max_length=256)
    system_prompt: str | None = None


def _legacy_error(exc: RhetorError) -> dict[str, Any]:
    return {"type": "error", "error": exc.to_dict()["error"]}


async def _legacy_request(conn: _Connection, data: dict[str, Any]) -> None:
    try:
        req: LegacyIn = _validate(LegacyIn, data)
    except RequestError as exc:
        await conn.send(_legacy_error(exc))
        return
    body = MessageIn(message=req.prompt, model=req.model, temperature=req.temperature, max_tokens=req.max_tokens,
                     streaming=req.stream, task_type=req.task_type, component=req.component,
                     context_id=req.context_id, system_prompt=req.system_prompt)
    request_id = conn.next_request_id()

    def on_chunks(chunks: list[str]) -> Awaitable[bool]:
        return conn.send(*({"type": "content_chunk", "text": chunk} for chunk in chunks))

    try:
        result = await _run(conn, body, on_chunks, request_id)
    except RhetorError as exc:
        await conn.send(_legacy_error(exc))
        return
    if result is not None:
        final = completion_body(result, req.context_id, request_id)
        await conn.send({"type": "content_complete", "text": final["message"], **final})


async def _legacy_dispatch(conn: _Connection, text: str) -> None:
    try:
        data = json.loads(text)
    except ValueError as exc:
        await conn.send(_legacy_error(RequestError(f"the message is not valid JSON: {exc}")))
        return
    if not isinstance(data, dict):
        await conn.send(_legacy_error(RequestError("a request must be a JSON object {prompt, ...}")))
        return
    conn.spawn(_legacy_request(conn, data))


@websocket("/ws/rhetor/streaming")
async def legacy_streaming(socket: WebSocket[Any, Any, Any]) -> None:
    """The older protocol; the ``api_key`` query parameter its clients send is accepted and not used."""
    await _Connection(socket).serve(_legacy_dispatch)


HANDLERS: list[Any] = [ws_endpoint, legacy_streaming]
