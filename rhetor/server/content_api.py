"""Templates, contexts and evaluation over HTTP (prompts are in ``prompts_api``, mounted through ``HANDLERS``).

Templates (``{variable}`` syntax of ``rhetor.templates``: plain substitution, never code):

- ``GET /templates``, ``POST /templates`` `{name, content, description?, variables?, metadata?}` where the
  variables come either as `variables: {required: [...], optional: {name: default}}` (or a list: all
  required) or in the seeds' form `metadata: {description, required_parameters, optional_parameters}`;
  undeclared variables are required. Creating a name that exists replaces it (upsert: content,
  variables, description and metadata are replaced, ``created_at`` is kept): 201 ``created: true`` when
  new, 200 ``created: false`` when replaced. ``GET``/``DELETE /templates/{name}``; the same four under
  ``/api/rhetor/templates``.
- ``POST /templates/{name}/render`` `{variables | parameters}` → `{name, rendered}`;
  ``POST /templates/{name}/generate`` `{parameters, ...every /message field but message}` renders, then
  answers exactly like ``POST /message`` (SSE with ``streaming: true``) plus `template` and `rendered`.

Contexts: ``GET /contexts?component=&limit=&offset=``, ``GET``/``DELETE /contexts/{context_id}`` (ids such
as ``ergon:s1``). Evaluation: ``POST /evaluate`` `{prompt, response, criteria?, pipeline?}` →
`{"evaluation": {overall_score, scores, feedback, judge}}` (the heuristic judge when no LLM judge is up).

Templates are shared by every component. A key bound to a component generates as that component and
sees only its contexts (another component's is a 404; naming another component is a 403).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Annotated, Any

from litestar import Request, Response, delete, get, post
from litestar.datastructures import State
from litestar.params import Parameter
from litestar.response import Stream
from pydantic import BaseModel, ConfigDict, Field

from rhetor.errors import NotFoundError, RequestError
from rhetor.server import core, prompts_api
from rhetor.server.prompts_api import scoped_component, storage_of, visible
from rhetor.server.state import server_state
from rhetor.server.wire import MessageIn, _RequestFields, sse
from rhetor.storage import TemplateRecord
from rhetor.templates import TemplateDef, render

__all__ = ["HANDLERS"]

Value = str | int | float | bool | None
_META_KEYS = ("description", "required_parameters", "optional_parameters")
_MAX_MESSAGE = 1_000_000


# ---- templates ----------------------------------------------------------------------------------------

class VariablesIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    required: list[str] = Field(default_factory=list)
    optional: dict[str, str] | list[str] = Field(default_factory=dict)


class TemplateIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=128, pattern=r"^[^/]+$")
    content: str = Field(min_length=1, max_length=200_000)
    description: str | None = Field(None, max_length=10_000)
    variables: VariablesIn | list[str] | None = None
    metadata: dict[str, Any] | None = None


class RenderIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    variables: dict[str, Value] | None = None
    parameters: dict[str, Value] | None = None


class GenerateIn(_RequestFields):
    parameters: dict[str, Value] | None = None
    variables: dict[str, Value] | None = None


def _names(value: Any, field: str, alternative: str = "") -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise RequestError(f"`{field}` must be a list of variable names{alternative}", field=field)
    return value


def _definition(body: TemplateIn) -> TemplateDef:
    """Validate the body into a template, from the variables form or the seeds' metadata form."""
    meta = dict(body.metadata or {})
    required: list[str] | None = None
    optional: dict[str, str] | list[str] | None = None
    field = "variables"
    if "required_parameters" in meta or "optional_parameters" in meta:
        if body.variables is not None:
            raise RequestError("give the variables in `variables` or in `metadata`, not both", field="variables")
        field = "metadata"
        if "required_parameters" in meta:
            required = _names(meta["required_parameters"], "metadata.required_parameters")
        raw = meta.get("optional_parameters")
        if isinstance(raw, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in raw.items()):
            optional = raw
        elif raw is not None:
            optional = _names(raw, "metadata.optional_parameters", " or {name: default text}")
    elif isinstance(body.variables, list):
        required = body.variables
    elif body.variables is not None:
        required, optional = body.variables.required, body.variables.optional
    description = body.description if body.description is not None else meta.get("description", "")
    if not isinstance(description, str):
        raise RequestError("`metadata.description` must be text", field="metadata.description")
    extra = {k: v for k, v in meta.items() if k not in _META_KEYS}
    try:
        return TemplateDef.create(body.name, body.content, required=required, optional=optional,
                                  description=description, metadata=extra)
    except RequestError as exc:
        if exc.field == "variables" and field != "variables":
            raise RequestError(exc.message, field=field, details={**exc.details, "field": field}) from None
        raise


def _template_out(t: TemplateRecord, **extra: Any) -> dict[str, Any]:
    """The stored template in both forms: ``variables`` and the seeds' ``metadata`` keys."""
    out = t.to_dict()
    out["metadata"] = {**t.metadata, "description": t.description, "required_parameters": list(t.required),
                       "optional_parameters": list(t.optional)}
    return {**out, "template_id": t.name, "variables": {"required": list(t.required), "optional": dict(t.optional)},
            **extra}


async def _template(state: State, name: str) -> TemplateDef:
    t = await (await storage_of(state)).templates.get(name)
    if t is None:
        raise NotFoundError(f"no template {name!r}", field="name")
    return TemplateDef(t.name, t.content, tuple(t.required), dict(t.optional), t.description, dict(t.metadata))


def _render(template: TemplateDef, variables: dict[str, Value] | None, parameters: dict[str, Value] | None) -> str:
    if variables is not None and parameters is not None:
        raise RequestError("give `variables` or `parameters`, not both", field="parameters")
    field = "variables" if variables is not None else "parameters"
    try:
        return render(template, variables if variables is not None else parameters or {})
    except RequestError as exc:
        raise RequestError(exc.message, field=field, details={**exc.details, "field": field}) from None


@get(["/templates", "/api/rhetor/templates"])
async def list_templates(state: State) -> dict[str, Any]:
    templates = await (await storage_of(state)).templates.list()
    return {"templates": [_template_out(t) for t in templates], "count": len(templates)}


@post(["/templates", "/api/rhetor/templates"])
async def create_template(data: TemplateIn, state: State) -> Response[Any]:
    d = _definition(data)
    repo = (await storage_of(state)).templates
    existed = await repo.get(d.name) is not None  # only the `created` flag depends on this read
    stored = await repo.put(TemplateRecord(d.name, d.content, list(d.required), dict(d.optional), d.description,
                                           dict(d.metadata)))
    return Response(_template_out(stored, created=not existed), status_code=200 if existed else 201)


@get(["/templates/{name:str}", "/api/rhetor/templates/{name:str}"])
async def get_template(name: str, state: State) -> dict[str, Any]:
    t = await (await storage_of(state)).templates.get(name)
    if t is None:
        raise NotFoundError(f"no template {name!r}", field="name")
    return _template_out(t)


@delete(["/templates/{name:str}", "/api/rhetor/templates/{name:str}"], status_code=200)
async def delete_template(name: str, state: State) -> dict[str, Any]:
    if not await (await storage_of(state)).templates.delete(name):
        raise NotFoundError(f"no template {name!r}", field="name")
    return {"deleted": True, "name": name}


@post("/templates/{name:str}/render", status_code=200)
async def render_template(name: str, data: RenderIn, state: State) -> dict[str, Any]:
    template = await _template(state, name)
    return {"name": name, "rendered": _render(template, data.variables, data.parameters)}


async def _with_fields(events: AsyncIterator[bytes], extra: dict[str, Any]) -> AsyncIterator[bytes]:
    """``/message``'s SSE events, the last one (``"done": true``, answer or error) with ``extra`` added."""
    async for event in events:
        if b'"done":true' in event and event.startswith(b"data: "):  # never inside a JSON string: quotes escape
            event = sse({**json.loads(event[6:]), **extra})
        yield event


@post("/templates/{name:str}/generate", status_code=200)
async def generate_from_template(name: str, data: GenerateIn, state: State,
                                 request: Request[Any, Any, Any]) -> Response[Any]:
    """Render, then answer exactly as ``POST /message`` does with the rendered text as the message."""
    rendered = _render(await _template(state, name), data.variables, data.parameters)
    if not rendered.strip() or len(rendered) > _MAX_MESSAGE:
        raise RequestError("the rendered template is empty or longer than a message may be", field="parameters")
    body = MessageIn(message=rendered, **data.model_dump(exclude={"parameters", "variables"}, exclude_unset=True))
    response = await core.answer(state, request, body, stream=data.streaming)
    extra = {"template": name, "rendered": rendered}
    if isinstance(response, Stream):
        response.iterator = _with_fields(response.iterator, extra)
    elif isinstance(response.content, dict):
        response.content = {**response.content, **extra}
    return response


# ---- contexts -----------------------------------------------------------------------------------------

async def _visible_context(state: State, request: Request[Any, Any, Any], context_id: str) -> Any:
    record = await (await storage_of(state)).contexts.load(context_id)
    if record is None or not visible(request, record.component):
        raise NotFoundError(f"no context {context_id!r}", field="context_id")
    return record


@get("/contexts")
async def list_contexts(state: State, request: Request[Any, Any, Any], component: str | None = None,
                        limit: Annotated[int, Parameter(ge=1, le=1000)] = 100,
                        offset: Annotated[int, Parameter(ge=0)] = 0) -> dict[str, Any]:
    component = scoped_component(request, component)
    found = await (await storage_of(state)).contexts.list(component=component, limit=limit, offset=offset)
    return {"contexts": [c.to_dict() for c in found], "count": len(found), "limit": limit, "offset": offset}


@get("/contexts/{context_id:str}")
async def get_context(context_id: str, state: State, request: Request[Any, Any, Any]) -> dict[str, Any]:
    record = await _visible_context(state, request, context_id)
    return {**record.to_dict(), "message_count": len(record.messages), "tokens": record.tokens}


@delete("/contexts/{context_id:str}", status_code=200)
async def delete_context(context_id: str, state: State, request: Request[Any, Any, Any]) -> dict[str, Any]:
    await _visible_context(state, request, context_id)
    if not await (await storage_of(state)).contexts.delete(context_id):
        raise NotFoundError(f"no context {context_id!r}", field="context_id")
    return {"deleted": True, "id": context_id}


# ---- evaluation ---------------------------------------------------------------------------------------

class EvaluateIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    prompt: str = Field(min_length=1, max_length=_MAX_MESSAGE)
    response: str = Field(max_length=_MAX_MESSAGE)
    criteria: list[Annotated[str, Field(min_length=1, max_length=64)]] | None = Field(None, min_length=1,
                                                                                       max_length=20)
    pipeline: str | None = None


@post("/evaluate", status_code=200)
async def evaluate(data: EvaluateIn, state: State) -> dict[str, Any]:
    engine = server_state(state).engine
    evaluation = await engine.evaluate(data.prompt, data.response, data.criteria, data.pipeline)
    return {"evaluation": evaluation.to_dict()}


HANDLERS: list[Any] = [list_templates, create_template, get_template, delete_template, render_template,
                       generate_from_template, list_contexts, get_context, delete_context, evaluate,
                       *prompts_api.HANDLERS]
