"""The ``Engine``: one loaded configuration, its providers and compiled pipelines, shared by requests.

``load_engine`` runs every check and returns all diagnostics; ``build_engine`` raises ``ConfigError``
with them. Both compile each pipeline once; requests then only call ``run``, ``stream`` or ``explain``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from rhetor.config.diagnostics import Diagnostic
from rhetor.config.loader import LoadedConfig, load_config_files
from rhetor.config.models import ProviderSpec
from rhetor.engine.compile import CompiledPipeline, compile_pipeline
from rhetor.engine.resources import Resources
from rhetor.engine.run import RunResult, StageTrace, execute, explain
from rhetor.engine.runtime import Clock, Runtime
from rhetor.errors import ConfigError, RhetorError, UnknownPipelineError
from rhetor.evaluation import Evaluation
from rhetor.providers import Provider, build_provider
from rhetor.stages import REGISTRY
from rhetor.stages.base import BuildContext, Request, RunContext
from rhetor.types import RequestOptions

__all__ = ["Engine", "Explanation", "RunObserver", "build_engine", "load_engine"]

_DONE = object()


class _Handoff:
    """What a streamed run's task hands its consumer: items appended, taken all at once. An ``asyncio.Queue`` does
    the same with more work per item (a chunk is put ~20 times per stream): here a put is an append, and only a
    put that finds the consumer waiting wakes it."""

    __slots__ = ("_items", "_waiter")

    def __init__(self) -> None:
        self._items: list[Any] = []
        self._waiter: asyncio.Future[None] | None = None

    def put(self, item: Any) -> None:
        self._items.append(item)
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():  # done: its consumer was cancelled while waiting
                waiter.set_result(None)

    async def take(self) -> list[Any]:
        """Every item put since the last ``take`` (at least one: waits for it)."""
        while not self._items:
            self._waiter = asyncio.get_running_loop().create_future()
            await self._waiter
        items, self._items = self._items, []
        return items


class RunObserver(Protocol):
    """Called once per finished run (success or error), after the answer was produced.

    Keyword-only arguments, and observers must accept ``**_`` so new arguments never break them.
    """

    def __call__(self, *, request: Request, pipeline: str, result: RunResult | None, error: RhetorError | None,
                 duration_s: float, **_: Any) -> None: ...


@dataclass(frozen=True)
class Explanation:
    pipeline: str
    stages: list[StageTrace]
    budget: dict[str, Any]
    outputs: Mapping[str, Mapping[str, Any]]
    """What the deciding stages produced, by stage id and output (e.g. ``route.chain``)."""

    def output_of(self, kind: type) -> Any:
        """The last output of type ``kind`` in stage order (e.g. the chain after budget's downgrade)."""
        found = None
        for sockets in self.outputs.values():
            for value in sockets.values():
                if isinstance(value, kind):
                    found = value
        return found


class Engine:
    def __init__(self, config: LoadedConfig, providers: Mapping[str, Provider],
                 pipelines: Mapping[str, CompiledPipeline], runtime: Runtime, resources: Resources,
                 *, owns_resources: bool) -> None:
        self.config = config
        self.providers = providers
        self.pipelines = pipelines
        self.runtime = runtime
        self.resources = resources
        self.owns_resources = owns_resources
        self.observers: list[RunObserver] = []

    def _notify(self, request: Request, pipeline: str, result: RunResult | None, error: RhetorError | None,
                started: float) -> None:
        duration = time.perf_counter() - started
        for observer in self.observers:
            observer(request=request, pipeline=pipeline, result=result, error=error, duration_s=duration)

    @property
    def version(self) -> str:
        return self.config.version

    def pipeline_for(self, options: RequestOptions, name: str | None = None) -> CompiledPipeline:
        """The pipeline named ``name``, else the one tasks.yaml gives the request's task type."""
        if name is None:
            tasks = self.config.tasks
            task = tasks.tasks.get(options.task_type or "") or tasks.tasks[tasks.default_task]
            name = task.pipeline
        pipeline = self.pipelines.get(name)
        if pipeline is None:
            raise UnknownPipelineError(f"unknown pipeline {name!r}", field="pipeline",
                                       details={"known_pipelines": sorted(self.pipelines)})
        return pipeline

    async def run(self, request: Request, pipeline: str | None = None) -> RunResult:
        compiled = self.pipeline_for(request.options, pipeline)
        await self.resources.ensure_started()
        started = time.perf_counter()
        try:
            result = await execute(compiled, RunContext(request))
        except RhetorError as exc:
            self._notify(request, compiled.name, None, exc, started)
            raise
        self._notify(request, compiled.name, result, None, started)
        return result

    async def stream(self, request: Request, pipeline: str | None = None) -> AsyncIterator[str | RunResult]:
        """Text chunks as the generating stage produces them, then the ``RunResult``.

        If the consumer stops early (a client gone), the run is cancelled with it.
        """
        batches = self.stream_batches(request, pipeline)
        try:
            async for batch in batches:
                for item in batch:
                    yield item
        finally:
            await batches.aclose()  # type: ignore[attr-defined]

    async def stream_batches(self, request: Request, pipeline: str | None = None
                             ) -> AsyncIterator[list[str | RunResult]]:
        """``stream`` a list at a time: each list holds every text chunk produced since the consumer last asked
        (never none), the last one ends with the ``RunResult``. Chunks that one upstream read delivered together
        (a dozen under load) can so leave in one write; a chunk that comes alone still leaves at once, and so does
        an answer's first chunk (the generate stage gives the loop a turn after it, before the rest of its read).

        The pipeline runs in its own task and hands its chunks over (``_Handoff``). If the consumer stops
        early (a client gone), the run is cancelled with it. A failed run raises its ``RhetorError`` after
        the chunks it produced.
        """
        compiled = self.pipeline_for(request.options, pipeline)
        await self.resources.ensure_started()
        started = time.perf_counter()
        handoff = _Handoff()
        task = asyncio.create_task(execute(compiled, RunContext(request, emit=handoff.put)))
        task.add_done_callback(lambda _: handoff.put(_DONE))  # always the last item handed over
        try:
            while True:
                batch = await handoff.take()
                if batch[-1] is not _DONE:
                    yield batch
                    continue
                batch.pop()
                try:
                    result = task.result()
                except RhetorError as exc:
                    self._notify(request, compiled.name, None, exc, started)
                    if batch:
                        yield batch
                    raise
                self._notify(request, compiled.name, result, None, started)
                batch.append(result)
                yield batch
                return
        finally:
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def evaluate(self, prompt: str, response: str, criteria: list[str] | None = None,
                       pipeline: str | None = None) -> Evaluation:
        """Judge ``response`` with the evaluate stage of ``pipeline`` (default: any pipeline that has
        one), else with the `chat` task's models as judges, else the heuristic judge."""
        from rhetor.evaluation import DEFAULT_CRITERIA
        from rhetor.stages.base import BuildContext
        from rhetor.stages.evaluate import DEFAULT_RUBRIC, EvaluateStage, Judge

        await self.resources.ensure_started()
        names = [pipeline] if pipeline else sorted(self.pipelines)
        judge: Judge | None = None
        for name in names:
            stage = next((s.stage for s in self.pipeline_for(RequestOptions(), name).stages.values()
                          if isinstance(s.stage, EvaluateStage)), None)
            if stage is not None:
                judge, criteria = stage.judge, criteria or stage.config.criteria
                break
        if judge is None:
            tasks = self.config.tasks
            chat = tasks.tasks.get("chat") or tasks.tasks[tasks.default_task]
            models = [m for m in chat.chain if self.config.providers.models[m].provider != "simulated"]
            build = BuildContext(self.config, self.providers, names[0] if names else "default", self.runtime,
                                 self.resources)
            judge = Judge(models, DEFAULT_RUBRIC, build)
        evaluation, _ = await judge.evaluate(prompt, response, criteria or list(DEFAULT_CRITERIA))
        return evaluation

    def budget_decision(self, options: RequestOptions) -> dict[str, Any]:
        budgets = self.config.budgets
        scope = budgets.components.get(options.component or "")
        policy = (scope.policy if scope and scope.policy else None) or budgets.policy
        limits = {"global": budgets.limits.model_dump()}
        if scope is not None:
            limits[f"component:{options.component}"] = scope.limits.model_dump()
        return {"policy": policy, "limits": limits}

    def explain(self, request: Request, pipeline: str | None = None) -> Explanation:
        compiled = self.pipeline_for(request.options, pipeline)
        stages, outputs = explain(compiled, RunContext(request))
        return Explanation(compiled.name, stages, self.budget_decision(request.options), outputs)

    async def aclose(self) -> None:
        for provider in self.providers.values():
            await provider.aclose()
        if self.owns_resources:
            await self.resources.close()


ProviderFactory = Callable[[str, ProviderSpec, Mapping[str, str], Clock], Provider]


def load_engine(root: Path, env: Mapping[str, str] | None = None, *, clock: Clock | None = None,
                seed: int | None = None, provider_factory: ProviderFactory = build_provider,
                resources: Resources | None = None) -> tuple[Engine | None, list[Diagnostic]]:
    """Load, check and compile the configuration in ``root``; every diagnostic is returned, sorted.

    ``clock`` and ``seed`` replace the wall clock and the jitter source (tests use a ``FakeClock``);
    ``provider_factory`` is the seam where tests put scripted providers (as httpx's transports).
    ``resources`` (durable storage) is shared with its owner; without it the engine keeps its own
    in-memory storage.
    """
    config, diags = load_config_files(root, env)
    if config is None:
        return None, sorted(diags)
    breaker = config.providers.circuit_breaker
    runtime = Runtime.create(clock, seed=seed, threshold=breaker.failures, cooldown_s=breaker.cooldown_s)
    providers = {name: provider_factory(name, spec, config.env, runtime.clock)
                 for name, spec in config.providers.providers.items()}
    owns = resources is None
    resources = resources or Resources.memory()
    pipelines: dict[str, CompiledPipeline] = {}
    for name, spec in config.pipelines.items():
        build = BuildContext(config=config, providers=providers, pipeline=name, runtime=runtime, resources=resources)
        compiled, pipe_diags = compile_pipeline(spec, config.pipeline_docs[name], build, REGISTRY)
        diags += pipe_diags
        if compiled is not None:
            pipelines[name] = compiled
    errors = [d for d in diags if d.severity == "error"]
    if errors:
        return None, sorted(diags)
    return Engine(config, providers, pipelines, runtime, resources, owns_resources=owns), sorted(diags)


def build_engine(root: Path, env: Mapping[str, str] | None = None, *, clock: Clock | None = None,
                 seed: int | None = None, provider_factory: ProviderFactory = build_provider,
                 resources: Resources | None = None) -> Engine:
    engine, diags = load_engine(root, env, clock=clock, seed=seed, provider_factory=provider_factory,
                                resources=resources)
    if engine is None:
        raise ConfigError([d for d in diags if d.severity == "error"])
    return engine
