"""``generate``: call the models of a chain in order until one answers.

Each target is tried at most once. A target whose provider is unavailable (no key, unreachable) is
skipped and recorded; a provider error before any output moves on to the next target. When the caller
streams, the stage commits to a target at its first chunk and forwards every chunk as it arrives; a
failure after that is a ``MidStreamError`` carrying the text sent and the cost incurred (never a clean
end). A chain-wide ``deadline_s`` bounds the whole walk. The answer names the model that really
answered and every attempt before it. (Retries with backoff, ``fallback_on`` and circuit breaking build
on this loop in the fallback work.)
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import Any

from pydantic import Field

from rhetor.errors import AllTargetsFailedError, MidStreamError, ProviderError, ProviderTimeoutError
from rhetor.providers.base import Provider, ProviderRequest, StreamEnd
from rhetor.stages.base import Bounds, BuildContext, RunContext, Stage, StageConfig, StageResult
from rhetor.types import Attempt, Completion, Message, Messages, ModelChain, RequestOptions, Usage, cost_of

__all__ = ["GenerateStage"]


class GenerateConfig(StageConfig):
    deadline_s: float | None = Field(None, gt=0)
    """Seconds the whole chain may take; unset means the sum of the targets' total timeouts."""
    max_tokens: int | None = Field(None, gt=0)
    """Cap on output tokens for every target (the request's own `max_tokens` may lower it)."""


class GenerateStage(Stage):
    type_name = "generate"
    Config = GenerateConfig
    inputs = {"messages": Messages, "chain": ModelChain, "options": RequestOptions}
    outputs = {"completion": Completion}

    def __init__(self, stage_id: str, config: GenerateConfig, build: BuildContext) -> None:
        super().__init__(stage_id, config, build)
        self.config: GenerateConfig = config
        self._models = build.config.providers.models
        self._providers = build.providers

    # ------------------------------------------------------------------ worst case

    def bounds(self, build: BuildContext) -> Bounds:
        specs = build.config.providers
        chains = build.config.chains_for_pipeline(build.pipeline) + [[m] for m in specs.models]
        worst = Bounds()
        for chain in chains:
            latency = cost = 0.0
            for name in chain:
                model = specs.models.get(name)
                provider = specs.providers.get(model.provider) if model else None
                if model is None or provider is None:
                    continue
                latency += provider.timeouts.total
                out = min(self.config.max_tokens or model.max_output_tokens, model.max_output_tokens)
                if model.price is not None:
                    cost += cost_of(Usage(input_tokens=max(0, model.context_window - out), output_tokens=out),
                                    model.price)
            if self.config.deadline_s is not None:
                latency = min(latency, self.config.deadline_s)
            worst = Bounds(max(worst.attempts, len(chain)), max(worst.latency_s, latency), max(worst.cost_usd, cost))
        return worst

    # ------------------------------------------------------------------ per request

    def _request(self, model_name: str, messages: Messages, options: RequestOptions) -> ProviderRequest:
        model = self._models[model_name]
        cap = min(self.config.max_tokens or model.max_output_tokens, model.max_output_tokens)
        msgs: tuple[Message, ...] = tuple(messages)
        if options.system_prompt and not any(m.role == "system" for m in msgs):
            msgs = (Message("system", options.system_prompt), *msgs)
        return ProviderRequest(model_id=model.id, messages=msgs, max_tokens=min(options.max_tokens or cap, cap),
                               temperature=options.temperature, stop=options.stop)

    async def _call(self, ctx: RunContext, provider: Provider, request: ProviderRequest,
                    model_name: str) -> tuple[str, Usage, str | None]:
        if not ctx.streaming:
            result = await provider.complete(request)
            return result.text, result.usage, result.finish_reason
        parts: list[str] = []
        assert ctx.emit is not None
        async for event in provider.stream(request):
            if isinstance(event, StreamEnd):
                return "".join(parts), event.usage, event.finish_reason
            if event.text:
                parts.append(event.text)
                ctx.notes["committed"] = model_name
                ctx.emit(event.text)
        raise MidStreamError("the stream ended without its final event", partial_text="".join(parts),
                             provider=provider.name, model=request.model_id)

    async def _walk(self, ctx: RunContext, chain: ModelChain, messages: Messages,
                    options: RequestOptions) -> tuple[Completion, list[Attempt]]:
        attempts: list[Attempt] = []
        for name in chain.models:
            model = self._models[name]
            provider = self._providers[model.provider]
            availability = provider.availability()
            if not availability.available:
                attempts.append(Attempt(name, model.provider, "provider-unavailable", None, availability.reason))
                continue
            request = self._request(name, messages, options)
            started = time.perf_counter()
            try:
                text, usage, finish = await self._call(ctx, provider, request, name)
            except MidStreamError as exc:
                self._charge_partial(exc, name)
                exc.details["attempts"] = [a.to_dict() for a in attempts]
                raise
            except ProviderError as exc:
                if ctx.notes.get("committed") == name:
                    raise self._as_midstream(exc, name, attempts) from exc
                attempts.append(Attempt(name, model.provider, exc.code, exc.upstream_status, exc.message,
                                        (time.perf_counter() - started) * 1000))
                continue
            attempts.append(Attempt(name, model.provider, "ok", None, "", (time.perf_counter() - started) * 1000))
            assert model.price is not None  # `validate` refuses models without a price
            completion = Completion(text=text, model=name, model_id=model.id, provider=model.provider,
                                    usage=usage, cost_usd=cost_of(usage, model.price), finish_reason=finish,
                                    attempts=tuple(attempts))
            return completion, attempts
        raise AllTargetsFailedError([a.to_dict() for a in attempts])

    def _charge_partial(self, exc: MidStreamError, name: str) -> None:
        model = self._models[name]
        usage = exc.usage if isinstance(exc.usage, Usage) else Usage()
        exc.details["model"] = name
        exc.details["usage"] = usage.to_dict()
        exc.details["cost_usd"] = cost_of(usage, model.price) if model.price else 0.0

    def _as_midstream(self, exc: ProviderError, name: str, attempts: list[Attempt]) -> MidStreamError:
        mid = MidStreamError(f"the stream failed after output was sent: {exc.message}", provider=exc.provider,
                             model=exc.model, upstream_status=exc.upstream_status, body=exc.body)
        self._charge_partial(mid, name)
        mid.details["attempts"] = [a.to_dict() for a in attempts]
        return mid

    def explain(self, ctx: RunContext, inputs: Mapping[str, Any]) -> StageResult:
        """Which targets would be tried, and which are available now; calls no provider."""
        plan = []
        for name in inputs["chain"].models:
            model = self._models[name]
            availability = self._providers[model.provider].availability()
            plan.append({"model": name, "provider": model.provider, "available": availability.available,
                         "reason": availability.reason})
        first = next((p["model"] for p in plan if p["available"]), None)
        decision = f"would try {first} first" if first else "no target is available"
        why = "; ".join(f"{p['model']}: {'available' if p['available'] else p['reason']}" for p in plan)
        return StageResult(outputs={}, decision=decision, why=why, details={"targets": plan})

    async def run(self, ctx: RunContext, inputs: Mapping[str, Any]) -> StageResult:
        chain: ModelChain = inputs["chain"]
        deadline = self.config.deadline_s
        try:
            async with asyncio.timeout(deadline):
                completion, attempts = await self._walk(ctx, chain, inputs["messages"], inputs["options"])
        except TimeoutError as exc:
            raise ProviderTimeoutError(f"the chain's deadline of {deadline}s passed") from exc
        failed = [a for a in attempts if a.code != "ok"]
        why = "first target answered" if not failed else "after " + ", ".join(f"{a.model}: {a.code}" for a in failed)
        return StageResult(
            outputs={"completion": completion},
            decision=f"answered by {completion.model} ({completion.provider})",
            why=why,
            details={"attempts": [a.to_dict() for a in attempts], "usage": completion.usage.to_dict(),
                     "cost_usd": completion.cost_usd},
        )
