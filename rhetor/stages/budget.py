"""``budget``: reserve a request's worst-case cost before any provider call; settle it after.

Per request (policy from budgets.yaml, the component's own or the global one):

- The estimate for each model of the chain is prompt tokens (its tokenizer, or a conservative count)
  × input price + the most output it may produce × output price. The reservation is the highest
  estimate of the chain, made atomically against every applicable limit (global, component; daily,
  weekly, monthly UTC windows) in the durable ledger.
- ``enforce``: a reservation that does not fit refuses the request (``budget-exceeded``, HTTP 402)
  before any provider is called. ``warn``: the request proceeds and the answer carries a warning.
  ``downgrade``: the chain keeps only the models whose estimate fits (e.g. the free offline model) and
  says so. ``ignore``: no limit applies, but the spend is still recorded.
- Thresholds (``warn_thresholds``) warn once per scope and window, not on every request.
- When the run ends, however it ends (answered, failed mid-stream, client gone), the reservation is
  settled to what the provider calls cost (their own usage; an estimate from what was seen when a call
  was cut short), or released when nothing was spent.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from functools import partial
from typing import Any

from pydantic import Field

from rhetor.budget import BudgetLedger, Reservation, policy_for, scopes_for
from rhetor.errors import BudgetExceededError, PipelineRunError
from rhetor.stages.base import BuildContext, RunContext, Stage, StageConfig, StageResult
from rhetor.types import BudgetDecision, Messages, ModelChain, Payloads, RequestOptions, Usage, cost_of

__all__ = ["BudgetStage"]

log = logging.getLogger("rhetor.budget")


class BudgetConfig(StageConfig):
    reservation_ttl_s: float = Field(900.0, gt=0)
    """How long a reservation blocks budget if its process dies before settling (then reconciled)."""


def _warning(over: Any) -> str:
    return (f"{over.scope} {over.window} budget of ${over.limit_usd:g} exceeded: spent ${over.spent_usd:g}, "
            f"reserved ${over.reserved_usd:g}, this request up to ${over.requested_usd:g}")


def _crossed(c: Any) -> str:
    return f"{c.scope} {c.window} budget is {round(c.threshold * 100):g}% used"


class BudgetStage(Stage):
    type_name = "budget"
    Config = BudgetConfig
    inputs = {"chain": ModelChain, "messages": Messages, "options": RequestOptions, "payloads": Payloads}
    optional_inputs = frozenset({"payloads"})
    outputs = {"chain": ModelChain, "decision": BudgetDecision}

    def __init__(self, stage_id: str, config: BudgetConfig, build: BuildContext) -> None:
        super().__init__(stage_id, config, build)
        self.config: BudgetConfig = config
        self._budgets = build.config.budgets
        self._models = build.config.providers.models
        self._tasks = build.config.tasks
        self._tokenizers = build.runtime.tokenizers
        self._resources = build.resources
        self._ledger: BudgetLedger | None = None

    def _ledger_now(self) -> BudgetLedger:
        if self._ledger is None:
            if self._resources is None:
                raise PipelineRunError("the budget stage needs durable storage; this engine was built without it")
            self._ledger = BudgetLedger.from_config(self._resources.storage.ledger, self._budgets)
        return self._ledger

    def estimates(self, chain: ModelChain, messages: Messages, options: RequestOptions,
                  payloads: Payloads | None = None) -> dict[str, float]:
        """Model → the most one answer from it may cost for this request (its own payload when pruned)."""
        out = {}
        counted: dict[tuple[int, str], int] = {}  # targets given the same payload (prune shares it) count it once
        for name in chain.models:
            model = self._models[name]
            if payloads is not None and name in payloads.by_model:
                messages = payloads.by_model[name]
            output = min(options.max_tokens or model.max_output_tokens, model.max_output_tokens)
            key = (id(messages), model.tokenizer)
            prompt = counted.get(key)
            if prompt is None:
                prompt = counted[key] = self._tokenizers.count(messages, model.tokenizer)
            usage = Usage(input_tokens=prompt, output_tokens=output)
            out[name] = cost_of(usage, model.price) if model.price else 0.0
        return out

    async def _reserve(self, policy: str, scopes: Mapping[str, Any], estimates: dict[str, float],
                       chain: tuple[str, ...], attrs: dict[str, Any]) -> tuple[Reservation, tuple[str, ...]]:
        ledger = self._ledger_now()
        ttl = self.config.reservation_ttl_s
        if policy != "downgrade":
            return await ledger.reserve(scopes, max(estimates.values(), default=0.0), enforce=policy == "enforce",
                                        ttl_s=ttl, attrs=attrs), chain
        refused: BudgetExceededError | None = None
        for amount in sorted(set(estimates.values()), reverse=True):
            try:
                reservation = await ledger.reserve(scopes, amount, enforce=True, ttl_s=ttl, attrs=attrs)
            except BudgetExceededError as exc:
                refused = exc
                continue
            return reservation, tuple(m for m in chain if estimates[m] <= amount)
        assert refused is not None
        raise refused

    def explain(self, ctx: RunContext, inputs: Mapping[str, Any]) -> StageResult:
        """The policy and the amount that would be reserved (the ledger is not read or written)."""
        options: RequestOptions = inputs["options"]
        chain: ModelChain = inputs["chain"]
        policy = policy_for(self._budgets, options.component)
        scopes = scopes_for(self._budgets, options.component)
        estimates = self.estimates(chain, inputs["messages"], options)
        amount = max(estimates.values(), default=0.0)
        decision = BudgetDecision(policy=policy, reserved_usd=amount, scopes=tuple(scopes))
        limits = {scope: spec.model_dump() for scope, spec in scopes.items()}
        stated = [f"{scope} {window} ${value:g}" for scope, windows in limits.items()
                  for window, value in windows.items() if value]
        return StageResult(outputs={"chain": chain, "decision": decision},
                           decision=f"would reserve ${amount:g} (policy {policy})",
                           why="limits: " + (", ".join(stated) if stated else "none"),
                           details={"estimates_usd": estimates, "limits": limits})

    async def run(self, ctx: RunContext, inputs: Mapping[str, Any]) -> StageResult:
        options: RequestOptions = inputs["options"]
        chain: ModelChain = inputs["chain"]
        policy = policy_for(self._budgets, options.component)
        scopes = scopes_for(self._budgets, options.component)
        estimates = self.estimates(chain, inputs["messages"], options, inputs.get("payloads"))
        task = options.task_type if options.task_type in self._tasks.tasks else self._tasks.default_task
        attrs = {"component": options.component, "task_type": task}
        reservation, kept = await self._reserve(policy, scopes, estimates, chain.models, attrs)
        ctx.finalizers.append(partial(self._settle, reservation.id, attrs))
        warnings = [] if policy == "ignore" else [_warning(o) for o in reservation.over] + [
            _crossed(c) for c in reservation.crossed]
        downgraded = chain.models if kept != chain.models else None
        decision = BudgetDecision(policy=policy, reserved_usd=reservation.amount_usd, scopes=tuple(scopes),
                                  warnings=tuple(warnings), downgraded_from=downgraded)
        why = f"policy {policy}; reserved ${reservation.amount_usd:g} on {', '.join(scopes)}"
        if downgraded:
            why += f"; downgraded from [{', '.join(downgraded)}] to fit the budget"
        if warnings:
            why += "; " + "; ".join(warnings)
        return StageResult(outputs={"chain": ModelChain(kept), "decision": decision},
                           decision=f"chain [{', '.join(kept)}]", why=why,
                           details={"estimates_usd": estimates, **decision.to_dict()})

    async def _settle(self, reservation_id: str, attrs: dict[str, Any], ctx: RunContext) -> None:
        """A run finalizer: the engine runs finalizers in a task that nothing cancels (``engine.run.execute``), so
        the ledger need not shield the settlement again (``in_shield``)."""
        ledger = self._ledger_now()
        if not ctx.spends:
            await ledger.release(reservation_id, in_shield=True)
            return
        cost = round(sum(s.cost_usd for s in ctx.spends), 9)
        usage = Usage(*(sum(getattr(s.usage, f) for s in ctx.spends) for f in
                        ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens")))
        last = ctx.spends[-1]
        settlement = await ledger.settle(reservation_id, cost, usage,
                                         {**attrs, "model": last.model, "provider": last.provider}, in_shield=True)
        for crossed in settlement.crossed:
            log.warning("budget threshold crossed", extra={"fields": {"warning": _crossed(crossed)}})
