"""System prompts per component over HTTP, and ``POST /prompts/generate`` (prompt text from a format).

- ``GET /prompts?component=`` lists prompts (by component, name, id); ``POST /prompts``
  `{component, name, content, description?, tags?, is_default?}` stores one: 201 when new; the same
  component and name again replaces that prompt (same id, 200, ``created: false``). Saving a default
  clears the component's previous default (the repository does it in one transaction), and the default
  is what the pipeline's ``system_prompt`` stage puts in front of that component's requests (a request's
  own ``system_prompt`` still wins). ``GET``/``DELETE /prompts/{id}``; ``GET /prompts/default/{component}``.
- ``POST /prompts/generate`` `{task, context?, format?}` → `{prompt, format, template}`: the built-in
  template of that format rendered with the task and context; deterministic, no LLM is called.

A key bound to a component (``security``) sees and writes only that component's prompts: naming
another component is a 403, another component's prompt id is a 404. Mounted through
``content_api.HANDLERS``.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from litestar import Request, Response, delete, get, post
from litestar.datastructures import State
from pydantic import BaseModel, ConfigDict, Field

from rhetor.errors import NotFoundError, RequestError
from rhetor.server.security import ForbiddenError
from rhetor.server.state import server_state
from rhetor.storage import PromptRecord, Storage
from rhetor.templates import TemplateDef, render

__all__ = ["FORMATS", "HANDLERS", "owner_of", "scoped_component", "storage_of", "visible"]

Component = Annotated[str, Field(min_length=1, max_length=128)]


# ---- helpers shared with content_api ---------------------------------------------------------------

async def storage_of(state: State) -> Storage:
    engine = server_state(state).engine
    await engine.resources.ensure_started()
    return engine.resources.storage


def owner_of(request: Request[Any, Any, Any]) -> str | None:
    """The component the request's API key belongs to (None: any component)."""
    owner = request.scope.get("state", {}).get("auth_component")
    return None if owner is None else str(owner)


def scoped_component(request: Request[Any, Any, Any], asked: str | None, field: str = "component") -> str | None:
    """``asked``, or the key's component when it names none; another component than the key's is a 403."""
    owner = owner_of(request)
    if owner is None:
        return asked
    if asked is not None and asked != owner:
        raise ForbiddenError(f"this API key belongs to component {owner!r}, not {asked!r}", details={"field": field})
    return owner


def visible(request: Request[Any, Any, Any], component: str | None) -> bool:
    owner = owner_of(request)
    return owner is None or component == owner


# ---- prompts ----------------------------------------------------------------------------------------

class PromptIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    component: Component | None = None
    """Required unless the API key belongs to a component."""
    name: str = Field(min_length=1, max_length=256)
    content: str = Field(min_length=1, max_length=200_000)
    description: str = Field("", max_length=10_000)
    tags: list[Annotated[str, Field(max_length=128)]] = Field(default_factory=list, max_length=100)
    is_default: bool = False


async def _visible_prompt(state: State, request: Request[Any, Any, Any], prompt_id: str) -> PromptRecord:
    prompt = await (await storage_of(state)).prompts.get(prompt_id)
    if prompt is None or not visible(request, prompt.component):
        raise NotFoundError(f"no prompt {prompt_id!r}", field="prompt_id")
    return prompt


@get("/prompts")
async def list_prompts(state: State, request: Request[Any, Any, Any], component: str | None = None) -> dict[str, Any]:
    component = scoped_component(request, component)
    prompts = await (await storage_of(state)).prompts.list(component)
    return {"prompts": [p.to_dict() for p in prompts], "count": len(prompts)}


@post("/prompts")
async def create_prompt(data: PromptIn, state: State, request: Request[Any, Any, Any]) -> Response[Any]:
    component = scoped_component(request, data.component)
    if component is None:
        raise RequestError("`component` is required", field="component")
    repo = (await storage_of(state)).prompts
    same = next((p for p in await repo.list(component) if p.name == data.name), None)
    stored = await repo.put(PromptRecord(id=same.id if same else "", component=component, name=data.name,
                                         content=data.content, description=data.description, tags=list(data.tags),
                                         is_default=data.is_default))
    return Response({**stored.to_dict(), "created": same is None}, status_code=200 if same else 201)


@get("/prompts/{prompt_id:str}")
async def get_prompt(prompt_id: str, state: State, request: Request[Any, Any, Any]) -> dict[str, Any]:
    return (await _visible_prompt(state, request, prompt_id)).to_dict()


@delete("/prompts/{prompt_id:str}", status_code=200)
async def delete_prompt(prompt_id: str, state: State, request: Request[Any, Any, Any]) -> dict[str, Any]:
    await _visible_prompt(state, request, prompt_id)
    if not await (await storage_of(state)).prompts.delete(prompt_id):
        raise NotFoundError(f"no prompt {prompt_id!r}", field="prompt_id")
    return {"deleted": True, "id": prompt_id}


@get("/prompts/default/{component:str}")
async def default_prompt(component: str, state: State, request: Request[Any, Any, Any]) -> dict[str, Any]:
    scoped_component(request, component)
    prompt = await (await storage_of(state)).prompts.default_for(component)
    if prompt is None:
        raise NotFoundError(f"component {component!r} has no default prompt", field="component")
    return prompt.to_dict()


# ---- generated prompts --------------------------------------------------------------------------

def _format(name: str, content: str, description: str) -> TemplateDef:
    return TemplateDef.create(f"format:{name}", content, required=["task"], optional={"context": ""},
                              description=description)


FORMATS: dict[str, TemplateDef] = {t.name.partition(":")[2]: t for t in (
    _format("instruction", "Instruction: {task}{context}\n\nFollow the instruction exactly and answer clearly "
            "and completely.", "A direct instruction"),
    _format("chat", "{task}{context}\n\nReply conversationally: helpful, friendly and concise.",
            "A conversational turn"),
    _format("few_shot", "Answer in the form the examples show.\n\nExample task: Summarise \"The meeting moved "
            "from Thursday to Friday.\"\nExample answer: The meeting is now on Friday.\n\nExample task: Name two "
            "primary colours.\nExample answer: Red and blue.\n\nTask: {task}{context}\nAnswer:",
            "The task after two worked examples"),
    _format("step_by_step", "Task: {task}{context}\n\nWork through this step by step: state your assumptions, "
            "reason through each step in order, then give the final answer on its own line.",
            "Reasoning in explicit steps"),
    _format("system", "You are an assistant for this task: {task}{context}\n\nStay within the task; be accurate, "
            "clear and concise.", "A system prompt for the task"),
)}


class GeneratePromptIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    task: str = Field(min_length=1, max_length=200_000)
    context: dict[str, Any] = Field(default_factory=dict)
    format: str = "instruction"


def _context_block(context: dict[str, Any]) -> str:
    """``\\n\\nContext:`` and one ``- key: value`` line per entry in the caller's order; empty when none."""
    if not context:
        return ""
    lines = [f"- {k}: {v if isinstance(v, str) else json.dumps(v, sort_keys=True, ensure_ascii=False)}"
             for k, v in context.items()]
    return "\n\nContext:\n" + "\n".join(lines)


@post("/prompts/generate", status_code=200)
async def generate_prompt(data: GeneratePromptIn) -> dict[str, Any]:
    template = FORMATS.get(data.format)
    if template is None:
        raise RequestError(f"unknown format {data.format!r}; known: {', '.join(FORMATS)}", field="format",
                           details={"formats": list(FORMATS)})
    prompt = render(template, {"task": data.task, "context": _context_block(data.context)})
    return {"prompt": prompt, "format": data.format, "template": template.name}


@get("/prompts/formats", sync_to_thread=False)
def prompt_formats() -> dict[str, Any]:
    return {"formats": [{"format": k, "template": t.name, "description": t.description, "content": t.content}
                        for k, t in FORMATS.items()]}


HANDLERS = [list_prompts, create_prompt, prompt_formats, get_prompt, delete_prompt, default_prompt, generate_prompt]
