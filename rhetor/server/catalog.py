"""``GET /providers`` (providers, models, availability and why, circuits, the active choice) and
``POST /provider`` (choose the provider and model used by requests that name neither a model nor a task).

The choice is validated against providers.yaml and kept per server process; a config reload keeps it
only if the model still exists.
"""

from __future__ import annotations

from typing import Any

from litestar import get, post
from litestar.datastructures import State
from pydantic import BaseModel, ConfigDict

from rhetor.config.diagnostics import suggest
from rhetor.errors import RequestError
from rhetor.server.state import server_state

__all__ = ["HANDLERS"]


class ProviderChoice(BaseModel):
    model_config = ConfigDict(extra="forbid")

    provider: str
    model: str | None = None


@get("/providers", sync_to_thread=False)
def providers(state: State) -> dict[str, Any]:
    rhetor = server_state(state)
    engine = rhetor.engine
    specs = engine.config.providers
    circuits = engine.runtime.circuits
    out: dict[str, Any] = {}
    for name, provider in engine.providers.items():
        availability = provider.availability()
        out[name] = {
            "kind": provider.kind, "available": availability.available, "reason": availability.reason,
            "models": {m: {"id": spec.id, "context_window": spec.context_window,
                           "max_output_tokens": spec.max_output_tokens,
                           "price_per_million": spec.price.model_dump() if spec.price else None,
                           "capabilities": spec.capabilities, "tier": spec.tier, "circuit": circuits.state(m)}
                       for m, spec in specs.models.items() if spec.provider == name},
        }
    default_model = rhetor.active.get("model") or specs.default_model
    active = dict(rhetor.active) or (
        {"provider": specs.models[default_model].provider, "model": default_model} if default_model else {})
    return {"providers": out, "active": active, "default_task": engine.config.tasks.default_task,
            "task_types": sorted(engine.config.tasks.tasks)}


@post("/provider", status_code=200)
async def set_provider(data: ProviderChoice, state: State) -> dict[str, Any]:
    rhetor = server_state(state)
    specs = rhetor.engine.config.providers
    if data.provider not in specs.providers:
        hint = suggest(data.provider, specs.providers)
        raise RequestError(f"unknown provider {data.provider!r}" + (f" ({hint})" if hint else ""), field="provider",
                           details={"known_providers": sorted(specs.providers)})
    own = [m for m, spec in specs.models.items() if spec.provider == data.provider]
    model = data.model or (own[0] if own else None)
    if model is None or model not in own:
        raise RequestError(f"model {data.model!r} is not a model of provider {data.provider!r}", field="model",
                           details={"models": own})
    rhetor.active = {"provider": data.provider, "model": model}
    return {"success": True, "active": rhetor.active}


HANDLERS = [providers, set_provider]
