"""``route``: choose the ordered model chain for a request, and say why.

1. The base chain: an explicit ``model`` in the request (a model name of providers.yaml, or a
   provider's model id) wins; else the component's override for the task type; else the task's chain
   for the request's ``complexity`` (``by_complexity``), else the task's ``chain``. An unknown task type
   uses ``default_task`` and says so.
2. ``routing_parameters``: ``complexity`` without a declared chain reorders by tier (low: cheapest tier
   first, high: premium first); ``required_capabilities`` drops models lacking one; ``max_cost`` drops
   models whose estimated cost (prompt tokens + max output tokens, × price) exceeds it. ``provider`` keeps
   only that provider's models.
3. Models whose provider is unavailable (no key, unreachable) or whose circuit is open are dropped.

Every drop is a structured reason in the ``RoutingExplanation``. Nothing here calls a provider.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from rhetor.config.diagnostics import suggest
from rhetor.errors import ProviderUnavailableError, RequestError
from rhetor.stages.base import BuildContext, RunContext, Stage, StageConfig, StageResult
from rhetor.tokens import estimate_messages_tokens
from rhetor.types import Messages, ModelChain, RequestOptions, RoutingExplanation, Usage, cost_of

__all__ = ["RouteStage", "RoutingParameters"]

_TIER_RANK = {"local": 0, "economy": 1, "standard": 2, "premium": 3}


class RoutingParameters(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    complexity: Literal["low", "medium", "high"] | None = None
    required_capabilities: list[str] = []
    max_cost: float | None = Field(None, ge=0)
    """USD: models whose estimated cost for this request is above it are not used."""


class RouteConfig(StageConfig):
    allow_model_override: bool = True
    """Whether a request may name its own model (`model` field); when false the field is refused."""
    drop_unavailable: bool = True
    """Drop models whose provider is unavailable or whose circuit is open (each drop is explained)."""


def _parse_parameters(raw: Mapping[str, Any]) -> RoutingParameters:
    try:
        return RoutingParameters.model_validate(dict(raw))
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        field = ".".join(str(p) for p in ("routing_parameters", *first["loc"]))
        raise RequestError(f"{field}: {first['msg']}", field=field) from None


class RouteStage(Stage):
    type_name = "route"
    Config = RouteConfig
    inputs = {"options": RequestOptions, "messages": Messages}
    optional_inputs = frozenset({"messages"})
    outputs = {"chain": ModelChain, "explanation": RoutingExplanation}
    waits = False  # a decision over the config and the request alone

    def __init__(self, stage_id: str, config: RouteConfig, build: BuildContext) -> None:
        super().__init__(stage_id, config, build)
        self.config: RouteConfig = config
        self._tasks = build.config.tasks
        self._models = build.config.providers.models
        self._by_model_id = {m.id: name for name, m in self._models.items()}
        self._provider_specs = build.config.providers.providers
        self._providers = build.providers
        self._circuits = build.runtime.circuits

    # ------------------------------------------------------------------ base chain

    def _explicit(self, options: RequestOptions) -> tuple[tuple[str, ...], str]:
        if not self.config.allow_model_override:
            raise RequestError("this pipeline does not let a request choose its model", field="model")
        name = options.model if options.model in self._models else self._by_model_id.get(options.model or "")
        if name is None:
            hint = suggest(options.model or "", self._models)
            raise RequestError(f"unknown model {options.model!r}" + (f" ({hint})" if hint else ""),
                               field="model", details={"known_models": sorted(self._models)})
        return (name,), f"request named model {options.model!r}"

    def _base(self, options: RequestOptions, task: str, params: RoutingParameters) -> tuple[tuple[str, ...], str]:
        if options.model:
            return self._explicit(options)
        comp = self._tasks.components.get(options.component or "")
        if comp is not None and task in comp.tasks:
            return tuple(comp.tasks[task]), f"component={options.component} override for task={task}"
        if comp is not None and comp.default_chain:
            return tuple(comp.default_chain), f"component={options.component} default chain"
        spec = self._tasks.tasks[task]
        if params.complexity and params.complexity in spec.by_complexity:
            return tuple(spec.by_complexity[params.complexity]), f"task={task} complexity={params.complexity}"
        return tuple(spec.chain), f"task={task} from tasks.yaml"

    # ------------------------------------------------------------------ filters

    def _estimate(self, name: str, prompt_tokens: int, options: RequestOptions) -> float:
        model = self._models[name]
        out = min(options.max_tokens or model.max_output_tokens, model.max_output_tokens)
        return cost_of(Usage(input_tokens=prompt_tokens, output_tokens=out), model.price) if model.price else 0.0

    def _filter(self, chain: tuple[str, ...], options: RequestOptions, params: RoutingParameters,
                messages: Messages | None, reasons: list[dict[str, Any]]) -> tuple[str, ...]:
        keep = list(chain)

        def drop(model: str, reason: str, **extra: Any) -> None:
            keep.remove(model)
            reasons.append({"reason": reason, "model": model, "dropped": True, **extra})

        if options.provider:
            if options.provider not in self._provider_specs:
                raise RequestError(f"unknown provider {options.provider!r}", field="provider",
                                   details={"known_providers": sorted(self._provider_specs)})
            for m in [m for m in keep if self._models[m].provider != options.provider]:
                drop(m, "provider-filter", provider=self._models[m].provider)
        for m in list(keep):
            missing = [c for c in params.required_capabilities if c not in self._models[m].capabilities]
            if missing:
                drop(m, "missing-capability", missing=missing)
        if params.max_cost is not None:
            prompt = estimate_messages_tokens(messages or ())
            for m in list(keep):
                estimate = self._estimate(m, prompt, options)
                if estimate > params.max_cost:
                    drop(m, "over-max-cost", estimated_usd=estimate, max_cost=params.max_cost)
        return tuple(keep)

    def _drop_unavailable(self, chain: tuple[str, ...], reasons: list[dict[str, Any]]) -> tuple[str, ...]:
        keep = []
        for m in chain:
            availability = self._providers[self._models[m].provider].availability()
            circuit = self._circuits.state(m)
            if not availability.available:
                reasons.append({"reason": "provider-unavailable", "model": m, "dropped": True,
                                "detail": availability.reason})
            elif circuit == "open":
                reasons.append({"reason": "circuit-open", "model": m, "dropped": True})
            else:
                keep.append(m)
        return tuple(keep)

    # ------------------------------------------------------------------ decision

    def _decide(self, options: RequestOptions, messages: Messages | None) -> StageResult:
        params = _parse_parameters(options.routing_parameters)
        asked = options.task_type or self._tasks.default_task
        task = asked if asked in self._tasks.tasks else self._tasks.default_task
        reasons: list[dict[str, Any]] = []
        if task != asked:
            reasons.append({"reason": "unknown-task-type", "task_type": asked, "used": task})
        base, why = self._base(options, task, params)
        if task != asked:
            why = f"unknown task type {asked!r}, used {task!r}; " + why
        chain = base
        if params.complexity and not options.model and "complexity=" not in why:
            rank = _TIER_RANK.__getitem__
            ordered = sorted(chain, key=lambda m: rank(self._models[m].tier), reverse=params.complexity == "high")
            if params.complexity != "medium" and tuple(ordered) != chain:
                chain = tuple(ordered)
                reasons.append({"reason": "complexity-order", "complexity": params.complexity, "chain": list(chain)})
        chain = self._filter(chain, options, params, messages, reasons)
        if not chain:
            raise RequestError("no model of the chain fits the request's routing parameters",
                               field="routing_parameters", details={"chain": list(base), "reasons": reasons})
        if self.config.drop_unavailable:
            eligible = chain
            chain = self._drop_unavailable(chain, reasons)
            if not chain:
                raise ProviderUnavailableError("no model of the chain is available now",
                                               details={"chain": list(eligible), "reasons": reasons})
        dropped = [r for r in reasons if r.get("dropped")]
        if dropped:
            why += "; dropped " + ", ".join(f"{r['model']} ({r['reason']})" for r in dropped)
        reasons.insert(0, {"reason": "chosen", "chain": list(chain), "task_type": task})
        summary = f"task={task} → chain [{', '.join(chain)}] ({why})"
        explanation = RoutingExplanation(summary=summary, task_type=task, chain=chain, reasons=tuple(reasons))
        return StageResult(outputs={"chain": ModelChain(chain), "explanation": explanation},
                           decision=f"chain [{', '.join(chain)}]", why=why)

    def explain(self, ctx: RunContext, inputs: Mapping[str, Any]) -> StageResult:
        return self._decide(inputs["options"], inputs.get("messages"))

    async def run(self, ctx: RunContext, inputs: Mapping[str, Any]) -> StageResult:
        return self._decide(inputs["options"], inputs.get("messages"))
