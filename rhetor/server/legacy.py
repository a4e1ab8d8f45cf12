"""The older documented shapes under ``/api/rhetor/…``, mapped onto the same engine.

- ``POST /api/rhetor/completions`` `{prompt, temperature?, max_tokens?, model?, system_prompt?, stream?,
  task_type?, component?, context_id?}` → `{text, model, provider, usage, cost, ...}`; with `stream: true`
  SSE events `{"text", "chunk", "done": false}` then `{"done": true, "text": <whole>, ...}`.
- ``POST /api/rhetor/chat`` `{messages, ...}` → `{message: {role: "assistant", content}, model, ...}`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from litestar import Request, Response, post
from litestar.datastructures import State
from pydantic import Field

from rhetor.errors import RhetorError
from rhetor.server.core import primed_stream
from rhetor.server.event_stream import EventStream
from rhetor.server.observe import request_id_of
from rhetor.server.security import bind_component
from rhetor.server.state import server_state
from rhetor.server.wire import ChatMessageIn, ChunkEvents, _RequestFields, completion_body, sse, timestamp
from rhetor.stages.base import Request as EngineRequest
from rhetor.types import Message, Messages

__all__ = ["HANDLERS"]


class CompletionIn(_RequestFields):
    prompt: str = Field(min_length=1, max_length=1_000_000)
    stream: bool = False


class LegacyChatIn(_RequestFields):
    messages: list[ChatMessageIn] = Field(min_length=1, max_length=10_000)
    stream: bool = False


def _request(body: CompletionIn | LegacyChatIn, request_id: str, active: dict[str, str]) -> EngineRequest:
    options = body.options(stream=body.stream, active=active)
    if isinstance(body, CompletionIn):
        return EngineRequest.from_text(body.prompt, options, request_id)
    return EngineRequest(Messages(Message(m.role, m.content) for m in body.messages), options, request_id)


async def _events(first: list[Any], rest: AsyncIterator[list[Any]], request: EngineRequest) -> AsyncIterator[bytes]:
    """The SSE events of a streamed run; the chunks of one batch (``Engine.stream_batches``) in one write."""
    chunk = ChunkEvents(lambda text: {"text": text, "chunk": text, "done": False})
    try:
        batch = first
        while True:
            out = []
            for item in batch:
                if isinstance(item, str):
                    out.append(chunk(item))
                else:
                    body = completion_body(item, request.options.context_id, request.request_id)
                    out.append(sse({**body, "text": body["message"], "chunk": "", "done": True}))
                    yield b"".join(out)
                    return
            yield b"".join(out)
            batch = await anext(rest)
    except RhetorError as exc:
        yield sse({"done": True, "finished": False, **exc.to_dict(), "timestamp": timestamp()})
    finally:
        await rest.aclose()  # type: ignore[attr-defined]


async def _handle(state: State, http: Request[Any, Any, Any], body: CompletionIn | LegacyChatIn,
                  shape: str) -> Response[Any]:
    rhetor = server_state(state)
    request = bind_component(http.scope, _request(body, request_id_of(http.scope), rhetor.active))
    if body.stream:
        first, rest = await primed_stream(rhetor.engine, request, body.pipeline)
        return EventStream(_events(first, rest, request), media_type="text/event-stream",
                           headers={"Cache-Control": "no-cache"})
    result = await rhetor.engine.run(request, body.pipeline)
    out = completion_body(result, body.context_id, request.request_id)
    if shape == "chat":
        out["message"] = {"role": "assistant", "content": result.completion.text}
    else:
        out["text"] = out.pop("message")
    return Response(out)


@post("/api/rhetor/completions", status_code=200)
async def completions(data: CompletionIn, state: State, request: Request[Any, Any, Any]) -> Response[Any]:
    return await _handle(state, request, data, "completion")


@post("/api/rhetor/chat", status_code=200)
async def legacy_chat(data: LegacyChatIn, state: State, request: Request[Any, Any, Any]) -> Response[Any]:
    return await _handle(state, request, data, "chat")


HANDLERS = [completions, legacy_chat]
