"""``route``: choose the ordered model chain for a request.

Precedence, each recorded in the explanation: an explicit ``model`` in the request (a model name of
providers.yaml, or a provider's model id); else the component's override for the task type; else the
task's own chain from tasks.yaml. An unknown task type falls back to ``default_task`` and says so.
An explicit ``provider`` keeps only that provider's models of the chain.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rhetor.config.diagnostics import suggest
from rhetor.errors import RequestError
from rhetor.stages.base import BuildContext, RunContext, Stage, StageConfig, StageResult
from rhetor.types import ModelChain, RequestOptions, RoutingExplanation

__all__ = ["RouteStage"]


class RouteConfig(StageConfig):
    allow_model_override: bool = True
    """Whether a request may name its own model (`model` field); when false the field is refused."""


class RouteStage(Stage):
    type_name = "route"
    Config = RouteConfig
    inputs = {"options": RequestOptions}
    outputs = {"chain": ModelChain, "explanation": RoutingExplanation}

    def __init__(self, stage_id: str, config: RouteConfig, build: BuildContext) -> None:
        super().__init__(stage_id, config, build)
        self.config: RouteConfig = config
        self._tasks = build.config.tasks
        self._models = build.config.providers.models
        self._by_model_id = {m.id: name for name, m in self._models.items()}
        self._providers = build.config.providers.providers

    def _explicit(self, options: RequestOptions) -> tuple[tuple[str, ...], str]:
        if not self.config.allow_model_override:
            raise RequestError("this pipeline does not let a request choose its model", field="model")
        name = options.model if options.model in self._models else self._by_model_id.get(options.model or "")
        if name is None:
            hint = suggest(options.model or "", self._models)
            raise RequestError(f"unknown model {options.model!r}" + (f" ({hint})" if hint else ""),
                               field="model", details={"known_models": sorted(self._models)})
        return (name,), f"request named model {options.model!r}"

    def _decide(self, options: RequestOptions) -> tuple[tuple[str, ...], str, list[dict[str, Any]]]:
        reasons: list[dict[str, Any]] = []
        asked = options.task_type or self._tasks.default_task
        task = asked if asked in self._tasks.tasks else self._tasks.default_task
        if task != asked:
            reasons.append({"reason": "unknown-task-type", "task_type": asked, "used": task})
        if options.model:
            chain, why = self._explicit(options)
            reasons.append({"reason": "explicit-model", "model": chain[0]})
        else:
            comp = self._tasks.components.get(options.component or "")
            if comp is not None and task in comp.tasks:
                chain, why = tuple(comp.tasks[task]), f"component={options.component} override for task={task}"
            elif comp is not None and comp.default_chain:
                chain, why = tuple(comp.default_chain), f"component={options.component} default chain"
            else:
                chain, why = tuple(self._tasks.tasks[task].chain), f"task={task} from tasks.yaml"
            if task != asked:
                why = f"unknown task type {asked!r}, used {task!r}; " + why
        if options.provider:
            if options.provider not in self._providers:
                raise RequestError(f"unknown provider {options.provider!r}", field="provider",
                                   details={"known_providers": sorted(self._providers)})
            kept = tuple(m for m in chain if self._models[m].provider == options.provider)
            dropped = [m for m in chain if m not in kept]
            if not kept:
                kept = tuple(n for n, m in self._models.items() if m.provider == options.provider)[:1]
            for m in dropped:
                reasons.append({"reason": "provider-filter", "model": m, "dropped": True})
            chain, why = kept, why + f"; provider={options.provider} requested"
            if not chain:
                raise RequestError(f"provider {options.provider!r} has no models", field="provider")
        reasons.insert(0, {"reason": "chosen", "chain": list(chain), "task_type": task})
        return chain, why, reasons

    def _result(self, options: RequestOptions) -> StageResult:
        chain, why, reasons = self._decide(options)
        task = reasons[0]["task_type"]
        summary = f"task={task} → chain [{', '.join(chain)}] ({why})"
        explanation = RoutingExplanation(summary=summary, task_type=task, chain=chain, reasons=tuple(reasons))
        return StageResult(
            outputs={"chain": ModelChain(chain), "explanation": explanation},
            decision=f"chain [{', '.join(chain)}]",
            why=why,
        )

    def explain(self, ctx: RunContext, inputs: Mapping[str, Any]) -> StageResult:
        return self._result(inputs["options"])

    async def run(self, ctx: RunContext, inputs: Mapping[str, Any]) -> StageResult:
        return self._result(inputs["options"])
