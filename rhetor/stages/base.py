"""What a stage is: a config model, typed input and output sockets, and an async ``run``.

A stage type is a class with::

    type_name = "route"                      # the `type:` in pipeline YAML
    Config = RouteConfig                     # pydantic model of its `with:` block (extra="forbid")
    inputs = {"options": RequestOptions}     # socket name → type; checked against every edge at compile
    outputs = {"chain": ModelChain, ...}

One instance is built per stage per compiled pipeline (with its validated config and the shared
providers), then ``run`` is called once per request. Instances must not keep per-request state.
"""

from __future__ import annotations

import abc
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict

from rhetor.engine.runtime import Runtime
from rhetor.types import Message, Messages, RequestOptions, Spend

if TYPE_CHECKING:
    from rhetor.config.loader import LoadedConfig
    from rhetor.engine.resources import Resources
    from rhetor.providers.base import Provider

__all__ = [
    "Bounds",
    "BuildContext",
    "Issue",
    "Request",
    "RunContext",
    "Stage",
    "StageConfig",
    "StageResult",
]


class StageConfig(BaseModel):
    """Base of every stage's ``with:`` model: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)


@dataclass(frozen=True, slots=True)
class Request:
    """One request as the engine sees it (HTTP, WebSocket and CLI all build this)."""

    messages: Messages
    options: RequestOptions
    request_id: str = ""

    @classmethod
    def from_text(cls, text: str, options: RequestOptions | None = None, request_id: str = "") -> Request:
        return cls(Messages((Message("user", text),)), options or RequestOptions(), request_id)


@dataclass(frozen=True, slots=True)
class StageResult:
    outputs: Mapping[str, Any]
    decision: str = ""
    """What the stage decided, e.g. "chain [claude-opus, gpt-4-turbo, simulated]"."""
    why: str = ""
    """Why, in words a person reads in a trace, e.g. "task=code from tasks.yaml"."""
    details: Mapping[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class RunContext:
    """Per-request state the runner hands to each stage."""

    request: Request
    emit: Callable[[str], None] | None = None
    """Set when the caller streams: a generating stage passes each token to it as it arrives."""
    notes: dict[str, Any] = field(default_factory=dict)
    spends: list[Spend] = field(default_factory=list)
    """Every provider call that cost (or may have cost) money in this run, recorded as it ends."""
    finalizers: list[Callable[[RunContext], Awaitable[None]]] = field(default_factory=list)
    """Run once when the run ends, however it ends (success, error, cancellation), shielded from
    cancellation: e.g. settling a budget reservation from ``spends``."""

    @property
    def streaming(self) -> bool:
        return self.emit is not None


@dataclass(frozen=True, slots=True)
class Bounds:
    """A stage's worst case for one request."""

    attempts: int = 0
    latency_s: float = 0.0
    cost_usd: float = 0.0


@dataclass(frozen=True, slots=True)
class Issue:
    """A compile-time problem a stage finds in its own config; ``path`` is relative to its ``with:``."""

    path: tuple[str | int, ...]
    code: str
    message: str
    hint: str | None = None


@dataclass(frozen=True)
class BuildContext:
    """What a stage may use when it is built: the whole loaded config and the shared providers."""

    config: LoadedConfig
    providers: Mapping[str, Provider]
    pipeline: str
    runtime: Runtime = field(default_factory=Runtime.create)
    """Clock, circuit breakers and jitter, shared by every pipeline of one engine."""
    resources: Resources | None = None
    """Durable storage (budget ledger, contexts...), shared by engines; None when only validating."""


class Stage(abc.ABC):
    type_name: ClassVar[str]
    Config: ClassVar[type[StageConfig]] = StageConfig
    inputs: ClassVar[Mapping[str, type]] = {}
    outputs: ClassVar[Mapping[str, type]] = {}
    optional_inputs: ClassVar[frozenset[str]] = frozenset()
    waits: ClassVar[bool] = True
    """False when ``run`` never waits (no I/O, no provider, no storage: it returns without suspending). The
    compiler then runs the stage inline rather than as a task beside the other stages of its level (see
    ``CompiledPipeline.steps``); a stage that says False and then waits anyway only loses that concurrency."""

    def __init__(self, stage_id: str, config: StageConfig, build: BuildContext) -> None:
        self.id = stage_id
        self.config = config

    @classmethod
    def check(cls, config: StageConfig, build: BuildContext) -> list[Issue]:
        """Compile-time checks of the stage's config against the rest of the configuration."""
        return []

    def bounds(self, build: BuildContext) -> Bounds:
        """The stage's worst case (attempts, time, cost); zero for stages that call no provider."""
        return Bounds()

    def explain(self, ctx: RunContext, inputs: Mapping[str, Any]) -> StageResult | None:
        """What the stage would decide for this request without side effects or provider calls.

        Return None when the stage cannot say without calling out (the explain then stops there).
        """
        return None

    @abc.abstractmethod
    async def run(self, ctx: RunContext, inputs: Mapping[str, Any]) -> StageResult:
        """Do the stage's work for one request; outputs must match ``outputs`` exactly."""
