"""Pydantic ``*Spec`` models: the exact shape of each YAML file. Unknown keys are errors everywhere.

These mirror the files one to one (raw specs). Cross-references between files (a task naming a
model, a model naming a provider, a stage naming its inputs) are checked later, by
``rhetor.config.checks`` and the engine's compiler, so every problem gets a file:line diagnostic.
The JSON Schemas in ``schemas/`` are generated from these models (``rhetor schema``).
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

__all__ = [
    "BudgetLimitsSpec",
    "BudgetScopeSpec",
    "BudgetsFileSpec",
    "CircuitBreakerSpec",
    "ComponentRoutingSpec",
    "ModelPriceSpec",
    "ModelSpec",
    "PipelineLimitsSpec",
    "PipelineSpec",
    "ProviderSpec",
    "ProvidersFileSpec",
    "StageSpec",
    "TaskSpec",
    "TasksFileSpec",
    "TimeoutsSpec",
]

_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.:\-]*$"
Name = Annotated[str, Field(pattern=_NAME, min_length=1, max_length=128)]


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)


# ---------------------------------------------------------------- providers.yaml


class TimeoutsSpec(_Spec):
    connect: float = Field(5.0, gt=0)
    """Seconds to open a connection to the provider."""
    first_token: float = Field(30.0, gt=0)
    """Seconds until the first token (or the whole response) must have arrived."""
    total: float = Field(120.0, gt=0)
    """Seconds one attempt may take in all, streams included."""


def _env_reference(value: str) -> str:
    if not re.fullmatch(r"env:[A-Za-z_][A-Za-z0-9_]*", value):
        raise ValueError("write `env:VARIABLE` (the key is read from that environment variable); "
                         "keys are never written in config files")
    return value


class ProviderSpec(_Spec):
    kind: Literal["anthropic", "openai", "ollama", "simulated"]
    """Which SDK talks to this provider; `openai` also covers OpenAI-compatible servers via `base_url`."""
    api_key: Annotated[str, AfterValidator(_env_reference),
                       Field(json_schema_extra={"pattern": "^env:[A-Za-z_][A-Za-z0-9_]*$"})] | None = None
    """Where the key is read from, always `env:VARIABLE`; keys are never written in config files."""
    base_url: str | None = None
    """Endpoint of the provider's API; defaults to the vendor's own."""
    timeouts: TimeoutsSpec = TimeoutsSpec()
    max_retries: int = Field(0, ge=0, le=10)
    """Retries the SDK itself may do; Rhetor's fallback stage does its own, so 0 by default."""


class ModelPriceSpec(_Spec):
    input: float = Field(ge=0)
    """USD per million input tokens (0 is allowed and explicit, e.g. a local model)."""
    output: float = Field(ge=0)
    """USD per million output tokens."""
    cache_read: float | None = Field(None, ge=0)
    """USD per million cached input tokens read; defaults to the input price."""
    cache_write: float | None = Field(None, ge=0)
    """USD per million input tokens written to the provider's cache; defaults to the input price."""


class ModelSpec(_Spec):
    provider: Name
    """Name of a provider in this file."""
    id: str = Field(min_length=1)
    """The model id the provider's API expects, e.g. `claude-3-opus-20240229`."""
    context_window: int = Field(gt=0)
    """Tokens the model accepts, input and output together."""
    max_output_tokens: int = Field(4096, gt=0)
    """Most tokens one answer may have; also the default `max_tokens`."""
    price: ModelPriceSpec | None = None
    """Required: a model without a price is a `missing-price` diagnostic, never a silent $0."""
    capabilities: list[str] = []
    tier: Literal["local", "economy", "standard", "premium"] = "standard"
    tokenizer: Literal["approx", "cl100k_base", "o200k_base"] = "approx"
    """How prompts are counted before a call: `approx` (conservative, ~1 token per 3 characters) or a
    real BPE encoding (loaded on first use; each costs about 90 MB of memory)."""


class CircuitBreakerSpec(_Spec):
    failures: int = Field(5, ge=1, le=1000)
    """Consecutive failures of a model that open its circuit."""
    cooldown_s: float = Field(30.0, gt=0)
    """Seconds an open circuit skips the model before letting one trial request through."""


class ProvidersFileSpec(_Spec):
    providers: dict[Name, ProviderSpec]
    models: dict[Name, ModelSpec]
    default_model: Name | None = None
    """Model used when a request names neither a model nor a task with a chain."""
    circuit_breaker: CircuitBreakerSpec = CircuitBreakerSpec()
    """Per-model circuit breaking, shared by every pipeline."""


# ---------------------------------------------------------------- tasks.yaml


class TaskSpec(_Spec):
    pipeline: Name = "default"
    """Pipeline that serves requests of this task type."""
    chain: list[Name] = Field(min_length=1)
    """Models tried in order; the last is usually `simulated` so Rhetor answers with no keys."""
    by_complexity: dict[Literal["low", "medium", "high"], list[Name]] = {}
    """Chains used instead of `chain` when a request's `routing_parameters.complexity` names a level."""
    description: str = ""


class ComponentRoutingSpec(_Spec):
    tasks: dict[Name, list[Name]] = {}
    """Per task type, the chain this component uses instead of the task's own."""
    default_chain: list[Name] | None = None
    """Chain for every task type this component does not list."""


class TasksFileSpec(_Spec):
    default_task: Name = "default"
    """Task type used when a request names none, or one that is not listed."""
    tasks: dict[Name, TaskSpec]
    components: dict[Name, ComponentRoutingSpec] = {}


# ---------------------------------------------------------------- budgets.yaml


class BudgetLimitsSpec(_Spec):
    daily: float = Field(0.0, ge=0)
    """USD per UTC day; 0 means no limit."""
    weekly: float = Field(0.0, ge=0)
    """USD per ISO week (Monday 00:00 UTC); 0 means no limit."""
    monthly: float = Field(0.0, ge=0)
    """USD per calendar month (UTC); 0 means no limit."""


class BudgetScopeSpec(_Spec):
    policy: Literal["ignore", "warn", "enforce", "downgrade"] | None = None
    """Overrides the global policy for this scope."""
    limits: BudgetLimitsSpec = BudgetLimitsSpec()


class BudgetsFileSpec(_Spec):
    policy: Literal["ignore", "warn", "enforce", "downgrade"] = "warn"
    limits: BudgetLimitsSpec = BudgetLimitsSpec()
    warn_thresholds: list[Annotated[float, Field(gt=0, le=1)]] = [0.8, 0.95]
    """Fractions of a limit at which a warning is emitted, once per window."""
    components: dict[Name, BudgetScopeSpec] = {}


# ---------------------------------------------------------------- pipelines/*.yaml

_REF = re.compile(r"^[A-Za-z0-9_\-]+\.[A-Za-z0-9_]+$")


def _stage_ref(value: str) -> str:
    if not _REF.match(value):
        raise ValueError(f"{value!r} is not of the form 'stage.output' (or 'request.messages', 'request.options')")
    return value


Ref = Annotated[str, AfterValidator(_stage_ref), Field(json_schema_extra={"pattern": _REF.pattern})]


class StageSpec(_Spec):
    id: Name
    type: str = Field(min_length=1)
    """A stage type from Rhetor's registry (`rhetor validate` lists them when one is unknown)."""
    inputs: dict[str, Ref] = {}
    """Input name → `stage.output` (or `request.messages` / `request.options`)."""
    with_: dict[str, Any] = Field({}, alias="with")
    """The stage type's own settings; checked against that type's config model."""


class PipelineLimitsSpec(_Spec):
    max_attempts: int | None = Field(None, gt=0)
    """Most provider attempts one request may make."""
    max_latency_s: float | None = Field(None, gt=0)
    """Longest time one request may take, computed from timeouts and deadlines."""
    max_cost_usd: float | None = Field(None, ge=0)
    """Highest cost one request may incur (max tokens × price, summed over attempts)."""


class PipelineSpec(_Spec):
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True, populate_by_name=True)

    name: Name
    description: str = ""
    stages: list[StageSpec] = Field(min_length=1)
    output: Ref
    """The `stage.output` whose completion is the pipeline's answer."""
    limits: PipelineLimitsSpec = PipelineLimitsSpec()
