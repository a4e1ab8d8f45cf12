"""Budget over HTTP: ``GET /budget`` (also ``/api/rhetor/budget/usage``) and ``POST /estimate``.

``/budget`` reports, per scope (global and every configured or active component) and window, the
limit, spent, reserved and remaining, the policy, and spend, requests and tokens by model, provider,
component and task type (offline calls cost $0 and are still counted). ``/estimate`` says what a
request would reserve and whether it fits, without calling a provider or reserving anything.
"""

from __future__ import annotations

from typing import Any

from litestar import get, post
from litestar.datastructures import State
from pydantic import Field

from rhetor.budget import BudgetLedger, component_scope, policy_for, scopes_for
from rhetor.config.models import BudgetLimitsSpec
from rhetor.errors import RequestError
from rhetor.server.state import server_state
from rhetor.server.wire import ChatMessageIn, _RequestFields
from rhetor.stages.base import Request
from rhetor.types import Message, Messages, ModelChain

__all__ = ["HANDLERS"]


class EstimateIn(_RequestFields):
    message: str | None = Field(None, max_length=1_000_000)
    messages: list[ChatMessageIn] | None = None


async def _report(state: State, component: str | None = None) -> dict[str, Any]:
    engine = server_state(state).engine
    budgets = engine.config.budgets
    await engine.resources.ensure_started()
    ledger = BudgetLedger.from_config(engine.resources.storage.ledger, budgets)
    scopes: dict[str, BudgetLimitsSpec] = {"global": budgets.limits}
    for name, spec in budgets.components.items():
        scopes[component_scope(name)] = spec.limits
    if component:
        scopes.update(scopes_for(budgets, component))
    report = (await ledger.report(None, scopes)).to_dict()
    policies = {"global": budgets.policy, **{component_scope(n): policy_for(budgets, n) for n in budgets.components}}
    if component:
        policies[component_scope(component)] = policy_for(budgets, component)
    return {**report, "policies": policies, "warn_thresholds": list(budgets.warn_thresholds)}


@get("/budget")
async def budget(state: State, component: str | None = None) -> dict[str, Any]:
    return await _report(state, component)


@get("/api/rhetor/budget/usage")
async def budget_usage(state: State, component: str | None = None) -> dict[str, Any]:
    return await _report(state, component)


@post("/estimate", status_code=200)
async def estimate(data: EstimateIn, state: State) -> dict[str, Any]:
    """What the request would cost and reserve, and whether that fits every budget; nothing is called."""
    rhetor = server_state(state)
    engine = rhetor.engine
    if data.messages:
        messages = Messages(Message(m.role, m.content) for m in data.messages)
    elif data.message:
        messages = Messages((Message("user", data.message),))
    else:
        raise RequestError("give `message` or `messages`", field="message")
    request = Request(messages, data.options(stream=False, active=rhetor.active))
    explanation = engine.explain(request, data.pipeline)
    chain: ModelChain | None = explanation.output_of(ModelChain)
    models = chain.models if chain else ()
    budget_trace = next((t for t in explanation.stages if t.type == "budget"), None)
    estimates: dict[str, float] = dict((budget_trace.details or {}).get("estimates_usd", {})) if budget_trace else {}
    first = engine.config.providers.models[models[0]] if models else None
    prompt = engine.runtime.tokenizers.count(messages, first.tokenizer) if first else 0
    completion = min(data.max_tokens or first.max_output_tokens, first.max_output_tokens) if first else 0
    worst = max(estimates.values(), default=0.0)
    report = await _report(state, data.component)
    own = set(scopes_for(engine.config.budgets, data.component))  # only the limits this request counts against
    remaining = [w["remaining_usd"] for name, scope in report["scopes"].items() if name in own
                 for w in scope["windows"].values() if w.get("remaining_usd") is not None]
    return {"model": models[0] if models else None, "chain": list(models),
            "estimated_cost": estimates.get(models[0], 0.0) if models else 0.0, "worst_case_cost": worst,
            "estimates_usd": estimates, "prompt_tokens": prompt, "completion_tokens": completion,
            "total_tokens": prompt + completion, "under_budget": all(worst <= r for r in remaining),
            "policy": policy_for(engine.config.budgets, data.component),
            "tokenizer": first.tokenizer if first else None}


HANDLERS = [budget, budget_usage, estimate]
