"""The OpenAI-compatible API, for the official SDKs unchanged: ``POST /v1/chat/completions`` and ``GET /v1/models``.

The ``model`` field is resolved in this order (the first match wins):

1. ``rhetor`` or ``auto``: Rhetor's own routing, as ``POST /message`` with no model (so the
   ``POST /provider`` choice applies when the request names no task type or provider);
2. a model name of providers.yaml, or a provider's model id: that model alone (no fallback chain);
3. a task type of tasks.yaml: routed as that task type (its chain and fallback);
4. a pipeline name: that pipeline, routed by ``rhetor.task_type`` or the default task.

Anything else is a 404 naming ``model``. ``GET /v1/models`` lists every accepted name.

Rhetor's own options ride in one optional body field, ``rhetor`` (the SDKs send it with
``extra_body={"rhetor": {...}}``): ``{component, context_id, task_type, provider, routing_parameters}``.
``user``, ``metadata`` and the sampling fields Rhetor cannot apply (top_p, penalties, seed, ...) are
accepted and ignored; ``tools``, ``functions``, a non-text ``response_format``, ``logprobs``, audio and
``n`` > 1 are refused with a 400 naming the field, as is any unknown field.

Responses follow OpenAI's format exactly; ``model`` is the Rhetor model that answered, and a ``rhetor``
object adds provider, cost, attempts, routing explanation, trace and request id. Streams are OpenAI's
SSE chunks (the content chunks name the requested model: Engine.stream does not say which model
committed until its end; the finish and usage chunks name the one that answered). Every error body is
``{"error": {"code", "message", "details", "type", "param"}}``: Rhetor's shape and OpenAI's at once.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

from litestar import Request as HttpRequest
from litestar import Response, Router, get, post
from litestar.datastructures import State
from litestar.exceptions import HTTPException
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from rhetor.engine.engine import Engine
from rhetor.engine.run import RunResult
from rhetor.errors import NotFoundError, RequestError, RhetorError
from rhetor.server.event_stream import EventStream
from rhetor.server.observe import request_id_of
from rhetor.server.security import bind_component
from rhetor.server.state import server_state
from rhetor.server.wire import ChunkEvents, completion_body, sse
from rhetor.stages.base import Request
from rhetor.types import Message, Messages, RequestOptions, Usage

__all__ = ["HANDLERS"]

_AUTO = ("rhetor", "auto")
_IGNORED = frozenset({"top_p", "presence_penalty", "frequency_penalty", "seed", "metadata", "logit_bias", "store",
                      "service_tier", "parallel_tool_calls", "reasoning_effort", "prompt_cache_key",
                      "safety_identifier", "verbosity", "prediction", "user"})
_FINISH = {"stop": "stop", "end_turn": "stop", "stop_sequence": "stop", "length": "length", "max_tokens": "length",
           "tool_use": "tool_calls", "tool_calls": "tool_calls", "function_call": "function_call",
           "content_filter": "content_filter", "refusal": "content_filter"}
_PARAMS = {"pipeline": "model", "provider": "rhetor.provider", "task_type": "rhetor.task_type"}
_RHETOR_KEYS = ("provider", "model_id", "pipeline", "cost", "usage", "attempts", "routing_explanation", "trace",
                "context", "request_id")
_SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
_CREATED = int(time.time())


class _StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    include_usage: bool = False
    include_obfuscation: bool | None = None


class RhetorExtras(BaseModel):
    """The ``rhetor`` body field: what routes a request besides its model."""

    model_config = ConfigDict(extra="forbid")
    component: str | None = Field(None, max_length=128)
    context_id: str | None = Field(None, max_length=256)
    task_type: str | None = Field(None, max_length=64)
    provider: str | None = None
    routing_parameters: dict[str, Any] | None = None


class ChatCompletionIn(BaseModel):
    """The body of ``POST /v1/chat/completions`` (the fields in ``_IGNORED`` are dropped before this)."""

    model_config = ConfigDict(extra="forbid")
    model: str = Field(min_length=1)
    messages: list[Any] = Field(min_length=1)
    stream: bool | None = False
    stream_options: _StreamOptions | None = None
    temperature: float | None = Field(None, ge=0, le=2)
    max_tokens: int | None = Field(None, gt=0, le=1_000_000)
    max_completion_tokens: int | None = Field(None, gt=0, le=1_000_000)
    stop: str | list[str] | None = None
    n: int | None = None
    rhetor: RhetorExtras | None = None
    tools: list[Any] | None = None
    tool_choice: Any = None
    functions: list[Any] | None = None
    function_call: Any = None
    response_format: dict[str, Any] | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = None
    modalities: list[str] | None = None
    audio: Any = None
    web_search_options: Any = None


_REFUSED: tuple[tuple[str, Any, str], ...] = (
    ("n", lambda b: b.n not in (None, 1), "n must be 1: Rhetor returns one choice"),
    ("tools", lambda b: bool(b.tools), "tools (function calling) are not supported by Rhetor"),
    ("tool_choice", lambda b: b.tool_choice not in (None, "none"), "tool_choice is not supported by Rhetor"),
    ("functions", lambda b: bool(b.functions), "functions (function calling) are not supported by Rhetor"),
    ("function_call", lambda b: b.function_call not in (None, "none"), "function_call is not supported by Rhetor"),
    ("response_format", lambda b: b.response_format not in (None, {"type": "text"}),
     "response_format: only {\"type\": \"text\"} is supported by Rhetor"),
    ("logprobs", lambda b: bool(b.logprobs) or b.top_logprobs is not None, "logprobs are not supported by Rhetor"),
    ("modalities", lambda b: b.modalities not in (None, ["text"]), "modalities: only [\"text\"] is supported"),
    ("audio", lambda b: b.audio is not None, "audio output is not supported by Rhetor"),
    ("web_search_options", lambda b: b.web_search_options is not None, "web search is not supported by Rhetor"),
    ("stream_options", lambda b: b.stream_options is not None and not b.stream,
     "stream_options is only allowed when stream is true"),
)


def _parse(raw: bytes) -> ChatCompletionIn:
    try:
        data = json.loads(raw or b"null")
    except ValueError as exc:
        raise RequestError(f"the body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise RequestError("the body must be a JSON object")
    try:
        body = ChatCompletionIn.model_validate({k: v for k, v in data.items() if k not in _IGNORED})
    except ValidationError as exc:
        problems = exc.errors(include_url=False, include_input=False)
        first = min(problems, key=lambda p: p["type"] != "extra_forbidden")  # an unknown field first
        param = ".".join(str(p) for p in first["loc"])
        message = f"unknown field {param!r}" if first["type"] == "extra_forbidden" else f"{param}: {first['msg']}"
        raise RequestError(message, field=param, details={"errors": problems}) from None
    for param, refused, message in _REFUSED:
        if refused(body):
            raise RequestError(message, field=param)
    return body


def _content(content: Any, param: str) -> str:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise RequestError(f"{param} must be a string or a list of text parts", field=param)
    texts = []
    for j, part in enumerate(content):
        if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
            kind = part.get("type") if isinstance(part, dict) else type(part).__name__
            raise RequestError(f"{param}[{j}]: only text parts are supported, not {kind!r}", field=f"{param}[{j}].type")
        texts.append(part["text"])
    return "".join(texts)


def _messages(raw: list[Any]) -> Messages:
    out = []
    for i, m in enumerate(raw):
        param = f"messages[{i}]"
        if not isinstance(m, dict):
            raise RequestError(f"{param} must be an object", field=param)
        role = "system" if m.get("role") == "developer" else m.get("role")
        if role not in ("system", "user", "assistant"):
            raise RequestError(f"{param}.role {m.get('role')!r} is not supported (system, user or assistant)",
                               field=f"{param}.role")
        extra = sorted(k for k, v in m.items() if k not in ("role", "content", "name") and v not in (None, []))
        if extra:
            raise RequestError(f"{param}.{extra[0]} is not supported by Rhetor", field=f"{param}.{extra[0]}")
        out.append(Message(role, _content(m.get("content"), f"{param}.content")))
    return Messages(out)


def _route(engine: Engine, model: str) -> dict[str, str]:
    """What the ``model`` field names, as RequestOptions/pipeline keywords; 404 when nothing."""
    models = engine.config.providers.models
    if model in _AUTO:
        return {}
    if model in models or any(m.id == model for m in models.values()):
        return {"model": model}
    if model in engine.config.tasks.tasks:
        return {"task_type": model}
    if model in engine.pipelines:
        return {"pipeline": model}
    raise NotFoundError(f"The model {model!r} does not exist: GET /v1/models lists the models, task types and "
                        "pipelines Rhetor routes to", field="model", details={"known": _model_ids(engine)})


def _to_request(engine: Engine, body: ChatCompletionIn, request_id: str,
                active: dict[str, str]) -> tuple[Request, str | None]:
    target = _route(engine, body.model)
    x = body.rhetor or RhetorExtras()
    if not target and active and not x.task_type and not x.provider:  # as POST /message: the POST /provider choice
        target = {k: v for k, v in active.items() if k == "model"}
        x = x.model_copy(update={"provider": active.get("provider")})
    if "task_type" in target and x.task_type not in (None, target["task_type"]):
        raise RequestError(f"model {body.model!r} is a task type; rhetor.task_type {x.task_type!r} contradicts it",
                           field="rhetor.task_type")
    if body.max_tokens and body.max_completion_tokens and body.max_tokens != body.max_completion_tokens:
        raise RequestError("max_tokens and max_completion_tokens differ; send one", field="max_tokens")
    stop = (body.stop,) if isinstance(body.stop, str) else tuple(body.stop or ())
    options = RequestOptions(
        task_type=target.get("task_type") or x.task_type, component=x.component, context_id=x.context_id,
        model=target.get("model"), provider=x.provider, temperature=body.temperature,
        max_tokens=body.max_completion_tokens or body.max_tokens, stop=stop, stream=bool(body.stream),
        routing_parameters=dict(x.routing_parameters or {}))
    return Request(_messages(body.messages), options, request_id), target.get("pipeline")


def _usage(u: Usage) -> dict[str, Any]:
    prompt = u.input_tokens + u.cache_read_tokens + u.cache_write_tokens
    return {"prompt_tokens": prompt, "completion_tokens": u.output_tokens, "total_tokens": prompt + u.output_tokens,
            "prompt_tokens_details": {"cached_tokens": u.cache_read_tokens}}


def _finish(reason: str | None) -> str:
    return _FINISH.get(reason or "stop", "stop")


def _rhetor(result: RunResult, request: Request) -> dict[str, Any]:
    body = completion_body(result, request.options.context_id, request.request_id)
    return {k: body[k] for k in _RHETOR_KEYS}


def _completion(result: RunResult, request: Request) -> dict[str, Any]:
    c = result.completion
    choice = {"index": 0, "message": {"role": "assistant", "content": c.text},
              "finish_reason": _finish(c.finish_reason), "logprobs": None}
    return {"id": f"chatcmpl-{request.request_id}", "object": "chat.completion", "created": int(time.time()),
            "model": c.model, "choices": [choice], "usage": _usage(c.usage), "rhetor": _rhetor(result, request)}


def _error_body(exc: RhetorError) -> dict[str, Any]:
    field = exc.details.get("field")
    param = _PARAMS.get(field, f"rhetor.{field}" if str(field).startswith("routing_parameters") else field)
    return {"error": {**exc.to_dict()["error"], "param": param}}


async def _chunks(events: AsyncIterator[list[str | RunResult]], first: list[str | RunResult], request: Request,
                  requested: str, include_usage: bool) -> AsyncIterator[bytes]:
    """The ``chat.completion.chunk`` events of a streamed run; the chunks of one batch
    (``Engine.stream_batches``) in one write."""
    cid, created = f"chatcmpl-{request.request_id}", int(time.time())
    extra: dict[str, Any] = {"usage": None} if include_usage else {}

    def payload(model: str, delta: dict[str, Any], finish: str | None = None, **more: Any) -> dict[str, Any]:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
                "choices": [choice], **extra, **more}

    content = ChunkEvents(lambda text: payload(requested, {"content": text}))
    try:
        out = [sse(payload(requested, {"role": "assistant", "content": ""}))]
        batch = first
        while True:
            for item in batch:
                if isinstance(item, str):
                    out.append(content(item))
                    continue
                c = item.completion
                out.append(sse(payload(c.model, {}, _finish(c.finish_reason), rhetor=_rhetor(item, request))))
                if include_usage:
                    out.append(sse({"id": cid, "object": "chat.completion.chunk", "created": created,
                                    "model": c.model, "choices": [], "usage": _usage(c.usage)}))
                out.append(b"data: [DONE]\n\n")
                yield b"".join(out)
                return
            yield b"".join(out)
            out = []
            batch = await anext(events)
    except RhetorError as exc:
        yield sse(_error_body(exc))
    finally:
        await events.aclose()  # type: ignore[attr-defined]


@post("/chat/completions", status_code=200)
async def chat_completions(request: HttpRequest[Any, Any, Any], state: State) -> Response[Any]:
    rhetor_state = server_state(state)
    engine = rhetor_state.engine
    body = _parse(await request.body())
    rhetor_request, pipeline = _to_request(engine, body, request_id_of(request.scope), rhetor_state.active)
    rhetor_request = bind_component(request.scope, rhetor_request)
    if not body.stream:
        result = await engine.run(rhetor_request, pipeline)
        return Response(_completion(result, rhetor_request))
    events = engine.stream_batches(rhetor_request, pipeline)
    first = await anext(events)  # an error before any output is a plain HTTP error
    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    return EventStream(_chunks(events, first, rhetor_request, body.model, include_usage),
                       media_type="text/event-stream", headers=_SSE_HEADERS)


def _model_list(engine: Engine) -> list[dict[str, Any]]:
    owners = {name: m.provider for name, m in engine.config.providers.models.items()}
    for alias in (*_AUTO, *engine.config.tasks.tasks, *sorted(engine.pipelines)):
        owners.setdefault(alias, "rhetor")
    return [{"id": name, "object": "model", "created": _CREATED, "owned_by": owner} for name, owner in owners.items()]


def _model_ids(engine: Engine) -> list[str]:
    return [m["id"] for m in _model_list(engine)]


@get("/models", sync_to_thread=False)
def list_models(state: State) -> dict[str, Any]:
    return {"object": "list", "data": _model_list(server_state(state).engine)}


@get("/models/{model_id:str}", sync_to_thread=False)
def retrieve_model(model_id: str, state: State) -> dict[str, Any]:
    engine = server_state(state).engine
    for item in _model_list(engine):
        if item["id"] == model_id:
            return item
    raise NotFoundError(f"The model {model_id!r} does not exist", field="model", details={"known": _model_ids(engine)})


def _on_rhetor_error(_: HttpRequest[Any, Any, Any], exc: RhetorError) -> Response[Any]:
    return Response(_error_body(exc), status_code=exc.status)


def _on_http_error(_: HttpRequest[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    codes = {404: "not-found", 405: "method-not-allowed", 413: "body-too-large"}
    error = RhetorError(str(exc.detail))
    error.code, error.status = codes.get(exc.status_code, "bad-request"), exc.status_code
    return Response(_error_body(error), status_code=exc.status_code)


HANDLERS: list[Any] = [Router("/v1", route_handlers=[chat_completions, list_models, retrieve_model],
                              exception_handlers={RhetorError: _on_rhetor_error, HTTPException: _on_http_error})]
