"""``generate``: call the chain's models in order until one answers (the fallback stage).

Semantics, bounded by construction:

- Targets are walked once each, in order; the walk never returns to a target. Within its turn a target
  is retried up to ``retries`` times on retryable errors (rate limit, overload, timeout, connection), with
  exponential backoff and jitter; a Retry-After up to ``retry_after_max_s`` is honoured, a longer one
  moves on at once. So one request makes at most ``len(chain) × (retries + 1)`` provider calls.
- An error whose code is in ``fallback_on`` moves on to the next target; any other (by default a
  provider's "bad request") ends the request with that error and the attempts so far.
- ``context-too-long`` moves on to the next target with a larger context window, skipping smaller ones.
- A target whose provider is unavailable or whose circuit is open is skipped (recorded, not called).
  Failures feed the per-model circuit breakers; a connection failure marks the provider unreachable.
- ``deadline_s`` bounds the whole walk, waits included.
- Streaming: the stage commits to a target at its first chunk and forwards every chunk as it arrives.
  Failures before that fall over silently (recorded); a failure after it is a ``MidStreamError`` carrying
  the text sent and the cost incurred: the caller ends the stream with an error, never a clean end.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import Any

from rhetor.errors import (
    AllTargetsFailedError,
    AuthenticationError,
    ContextTooLongError,
    MidStreamError,
    ProviderConnectionError,
    ProviderError,
    ProviderTimeoutError,
    RateLimitError,
)
from rhetor.providers.base import Provider, ProviderRequest, StreamEnd
from rhetor.stages._fallback import GenerateConfig, backoff_delay, chain_bounds
from rhetor.stages.base import Bounds, BuildContext, RunContext, Stage, StageResult
from rhetor.tokens import estimate_tokens
from rhetor.types import (
    Attempt,
    Completion,
    Message,
    Messages,
    ModelChain,
    Payloads,
    RequestOptions,
    Spend,
    Usage,
    cost_of,
)

__all__ = ["GenerateStage"]


def _counts_against_circuit(exc: ProviderError) -> bool:
    """Failures of the provider, not of the request: they may open the model's circuit."""
    return exc.retryable or isinstance(exc, AuthenticationError | MidStreamError)


class _Walk:
    """The state of one request's walk down the chain."""

    def __init__(self, stage: GenerateStage, ctx: RunContext) -> None:
        self.stage = stage
        self.ctx = ctx
        self.attempts: list[Attempt] = []
        self.clock = stage._runtime.clock
        self.started = self.clock.now()
        self.too_long_window: int | None = None
        self.request: ProviderRequest | None = None
        """The provider request in flight (for estimating what a cut-short call cost)."""
        self.payloads: Payloads | None = None
        """Per-model messages fitted to each window (from a prune stage), when the pipeline has one."""

    def over_deadline(self, extra: float = 0.0) -> bool:
        deadline = self.stage.config.deadline_s
        return deadline is not None and self.clock.now() + extra - self.started >= deadline

    def skip(self, name: str, provider: str, code: str, message: str) -> None:
        self.attempts.append(Attempt(name, provider, code, None, message, skipped=True))


class GenerateStage(Stage):
    type_name = "generate"
    Config = GenerateConfig
    inputs = {"messages": Messages, "chain": ModelChain, "options": RequestOptions, "payloads": Payloads}
    optional_inputs = frozenset({"payloads"})
    outputs = {"completion": Completion}

    def __init__(self, stage_id: str, config: GenerateConfig, build: BuildContext) -> None:
        super().__init__(stage_id, config, build)
        self.config: GenerateConfig = config
        self._models = build.config.providers.models
        self._providers = build.providers
        self._runtime = build.runtime

    def bounds(self, build: BuildContext) -> Bounds:
        specs = build.config.providers
        chains = build.config.chains_for_pipeline(build.pipeline) + [[m] for m in specs.models]
        worst = Bounds()
        for chain in chains:
            b = chain_bounds(self.config, specs, chain)
            worst = Bounds(max(worst.attempts, b.attempts), max(worst.latency_s, b.latency_s),
                           max(worst.cost_usd, b.cost_usd))
        return worst

    # ------------------------------------------------------------------ one call

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
        assert ctx.emit is not None
        parts: list[str] = ctx.notes.setdefault("partial", [])
        parts.clear()
        async for event in provider.stream(request):
            if isinstance(event, StreamEnd):
                return "".join(parts), event.usage, event.finish_reason
            if event.text:
                parts.append(event.text)
                ctx.notes["committed"] = model_name
                ctx.emit(event.text)
                if len(parts) == 1:
                    # The first token goes to the client now: one turn of the loop lets the consumer send it
                    # before the rest of the upstream read it came in (often the whole answer) is relayed.
                    await asyncio.sleep(0)
        raise MidStreamError("the stream ended without its final event", partial_text="".join(parts),
                             provider=provider.name, model=request.model_id)

    # ------------------------------------------------------------------ the walk

    async def _target(self, walk: _Walk, name: str, messages: Messages, options: RequestOptions) -> Completion | None:
        """Try one target (with its retries); None means: move on to the next target."""
        model = self._models[name]
        provider = self._providers[model.provider]
        circuits = self._runtime.circuits
        if walk.too_long_window is not None and model.context_window <= walk.too_long_window:
            walk.skip(name, model.provider, "window-too-small",
                      f"context window {model.context_window} is not larger than one that overflowed")
            return None
        availability = provider.availability()
        if not availability.available:
            walk.skip(name, model.provider, "provider-unavailable", availability.reason)
            return None
        if not circuits.allow(name):
            walk.skip(name, model.provider, "circuit-open", "the model's circuit is open after repeated failures")
            return None
        if walk.payloads is not None and name in walk.payloads.by_model:
            messages = walk.payloads.by_model[name]
        request = walk.request = self._request(name, messages, options)
        waited = 0.0
        for retry in range(self.config.retries + 1):
            started = time.perf_counter()
            settled = False
            try:
                text, usage, finish = await self._call(walk.ctx, provider, request, name)
                settled = True
            except ProviderError as exc:
                settled = True
                delay = self._after_failure(walk, name, exc, retry, waited, (time.perf_counter() - started) * 1000)
                if delay is None:
                    return None
                await walk.clock.sleep(delay)
                waited = delay
                continue
            finally:
                if not settled:  # cancelled (client gone) or a bug: free a half-open trial slot, charge the call
                    circuits.release(name)
                    walk.ctx.spends.append(self._cut_short(walk.ctx, name, request))
            circuits.success(name)
            walk.attempts.append(Attempt(name, model.provider, "ok", None, "", (time.perf_counter() - started) * 1000,
                                         retry=retry, waited_s=waited))
            assert model.price is not None  # `validate` refuses models without a price
            cost = cost_of(usage, model.price)
            walk.ctx.spends.append(Spend(name, model.provider, usage, cost))
            return Completion(text=text, model=name, model_id=model.id, provider=model.provider, usage=usage,
                              cost_usd=cost, finish_reason=finish, attempts=tuple(walk.attempts))
        return None

    def _after_failure(self, walk: _Walk, name: str, exc: ProviderError, retry: int, waited: float,
                       duration_ms: float) -> float | None:
        """Record a failed call; return the delay before retrying this target, or None to move on.

        Raises when the request must end here (mid-stream, or an error not in ``fallback_on``).
        """
        model = self._models[name]
        circuit = None
        if _counts_against_circuit(exc):
            state = self._runtime.circuits.failure(name)
            circuit = state if state != "closed" else None
        walk.attempts.append(Attempt(name, model.provider, exc.code, exc.upstream_status, exc.message, duration_ms,
                                     retry=retry, waited_s=waited, circuit=circuit))
        committed = walk.ctx.notes.get("committed") == name
        if isinstance(exc, MidStreamError) or committed:
            raise self._midstream(exc, name, walk.attempts, walk.ctx.spends, walk.request) from exc
        if isinstance(exc, ContextTooLongError):
            walk.too_long_window = max(walk.too_long_window or 0, model.context_window)
        if exc.retryable and retry < self.config.retries and circuit != "open":
            delay = backoff_delay(self.config, retry, self._runtime.rng)
            if isinstance(exc, RateLimitError) and exc.retry_after is not None:
                if exc.retry_after > self.config.retry_after_max_s:
                    return self._move_on(exc, walk)
                delay = max(delay, exc.retry_after)
            if not walk.over_deadline(delay):
                return delay
        return self._move_on(exc, walk)

    def _move_on(self, exc: ProviderError, walk: _Walk) -> None:
        """The target's turn ends on ``exc``: stop the request, or return None to try the next target."""
        if isinstance(exc, ProviderConnectionError):  # not a blip: it failed through every retry it had
            provider = self._models[walk.attempts[-1].model].provider
            self._providers[provider].mark_unreachable(exc.message)
        if exc.code not in self.config.fallback_on:
            exc.details["attempts"] = [a.to_dict() for a in walk.attempts]
            raise exc
        return None

    def _midstream(self, exc: ProviderError, name: str, attempts: list[Attempt], spends: list[Spend],
                   request: ProviderRequest | None = None) -> MidStreamError:
        if isinstance(exc, MidStreamError):
            mid = exc
        else:
            mid = MidStreamError(f"the stream failed after output was sent: {exc.message}", provider=exc.provider,
                                 model=exc.model, upstream_status=exc.upstream_status, body=exc.body)
        model = self._models[name]
        usage = mid.usage if isinstance(mid.usage, Usage) else Usage()
        estimated = False
        if request is not None and (usage.input_tokens == 0 or (usage.output_tokens == 0 and mid.partial_text)):
            # The provider had not reported usage yet: never price sent text at $0, estimate what we saw.
            usage = Usage(input_tokens=usage.input_tokens or self._runtime.tokenizers.count(request.messages,
                                                                                            model.tokenizer),
                          output_tokens=usage.output_tokens or estimate_tokens(mid.partial_text),
                          cache_read_tokens=usage.cache_read_tokens, cache_write_tokens=usage.cache_write_tokens)
            estimated = True
        cost = cost_of(usage, model.price) if model.price else 0.0
        mid.details.update({"model": name, "usage": usage.to_dict(), "cost_usd": cost, "usage_estimated": estimated,
                            "attempts": [a.to_dict() for a in attempts]})
        spends.append(Spend(name, model.provider, usage, cost, estimated=estimated))
        return mid

    def _cut_short(self, ctx: RunContext, name: str, request: ProviderRequest) -> Spend:
        """What a call the caller abandoned may have cost: the prompt plus the text seen so far when
        streaming; the prompt plus the whole allowed answer when not (the provider may finish it)."""
        model = self._models[name]
        tokenizers = self._runtime.tokenizers
        prompt = tokenizers.count(request.messages, model.tokenizer)
        if ctx.streaming:
            output = estimate_tokens("".join(ctx.notes.get("partial", [])))
        else:
            output = request.max_tokens
        usage = Usage(input_tokens=prompt, output_tokens=output)
        return Spend(name, model.provider, usage, cost_of(usage, model.price) if model.price else 0.0, estimated=True)

    async def _walk(self, ctx: RunContext, chain: ModelChain, messages: Messages,
                    options: RequestOptions, payloads: Payloads | None = None) -> Completion:
        walk = _Walk(self, ctx)
        walk.payloads = payloads
        for name in chain.models:
            if walk.over_deadline():
                walk.skip(name, self._models[name].provider, "deadline", "the chain's deadline passed")
                continue
            completion = await self._target(walk, name, messages, options)
            if completion is not None:
                return completion
        raise AllTargetsFailedError([a.to_dict() for a in walk.attempts])

    # ------------------------------------------------------------------ stage API

    def explain(self, ctx: RunContext, inputs: Mapping[str, Any]) -> StageResult:
        """Which targets would be tried, and which are available now; calls no provider."""
        plan = []
        for name in inputs["chain"].models:
            model = self._models[name]
            availability = self._providers[model.provider].availability()
            plan.append({"model": name, "provider": model.provider, "available": availability.available,
                         "reason": availability.reason, "circuit": self._runtime.circuits.state(name)})
        first = next((p["model"] for p in plan if p["available"] and p["circuit"] != "open"), None)
        decision = f"would try {first} first" if first else "no target is available"
        why = "; ".join(f"{p['model']}: {'available' if p['available'] else p['reason']}" for p in plan)
        return StageResult(outputs={}, decision=decision, why=why,
                           details={"targets": plan, "max_attempts": len(plan) * (self.config.retries + 1)})

    async def run(self, ctx: RunContext, inputs: Mapping[str, Any]) -> StageResult:
        deadline = self.config.deadline_s
        try:
            async with asyncio.timeout(deadline):
                completion = await self._walk(ctx, inputs["chain"], inputs["messages"], inputs["options"],
                                              inputs.get("payloads"))
        except TimeoutError as exc:
            raise ProviderTimeoutError(f"the chain's deadline of {deadline}s passed") from exc
        failed = [a for a in completion.attempts if a.code != "ok"]
        why = "first target answered" if not failed else "after " + ", ".join(
            f"{a.model}: {a.code}" + (f" (retry {a.retry})" if a.retry else "") for a in failed)
        return StageResult(
            outputs={"completion": completion},
            decision=f"answered by {completion.model} ({completion.provider})",
            why=why,
            details={"attempts": [a.to_dict() for a in completion.attempts], "usage": completion.usage.to_dict(),
                     "cost_usd": completion.cost_usd},
        )

