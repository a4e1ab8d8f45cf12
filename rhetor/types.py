"""Domain values that flow between the request, stages and providers (frozen, cheap to create).

These are the types stage sockets are declared with; the compiler checks every edge against them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import msgspec

__all__ = [
    "Attempt",
    "Conversation",
    "Payloads",
    "Turn",
    "BudgetDecision",
    "Spend",
    "Completion",
    "Message",
    "ModelChain",
    "RequestOptions",
    "RoutingExplanation",
    "Usage",
    "cost_of",
]

Role = Literal["system", "user", "assistant"]


class Message(msgspec.Struct, frozen=True, gc=False):
    """One message sent to a model. A frozen msgspec ``Struct`` (as ``Turn``): a conversation's messages are built
    anew for each request, and a ``Struct`` is made in a quarter of a named tuple's time (70 against 315 ns; a
    frozen dataclass 462) and is written by msgspec as the JSON object ``{"role", "content"}`` without a dict in
    between (the providers' request bodies). ``gc=False``: two strings cannot form a cycle, so the collector
    never tracks it. ``to_dict`` gives the dict for everything else."""

    role: Role
    content: str

    def to_dict(self) -> dict[str, str]:
        return {"role": self.role, "content": self.content}


class Messages(tuple[Message, ...]):
    """The conversation sent to a model, oldest first (a tuple, so stages cannot mutate it)."""

    __slots__ = ()


@dataclass(frozen=True, slots=True)
class RequestOptions:
    """Everything a request says besides its messages."""

    task_type: str | None = None
    component: str | None = None
    context_id: str | None = None
    model: str | None = None
    provider: str | None = None
    system_prompt: str | None = None
    temperature: float | None = None
    max_tokens: int | None = None
    stop: tuple[str, ...] = ()
    stream: bool = False
    routing_parameters: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens + self.cache_read_tokens + self.cache_write_tokens

    def to_dict(self) -> dict[str, int]:
        return {
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cache_read_tokens": self.cache_read_tokens,
            "cache_write_tokens": self.cache_write_tokens,
            "total_tokens": self.total_tokens,
        }


def cost_of(usage: Usage, price: Any) -> float:
    """USD for ``usage`` at ``price`` (a ``ModelPriceSpec``: USD per million tokens)."""
    read = price.input if price.cache_read is None else price.cache_read
    write = price.input if price.cache_write is None else price.cache_write
    micro = (
        usage.input_tokens * price.input
        + usage.output_tokens * price.output
        + usage.cache_read_tokens * read
        + usage.cache_write_tokens * write
    )
    return round(micro / 1_000_000, 10)


@dataclass(frozen=True, slots=True)
class ModelChain:
    """An ordered list of model names (keys of ``providers.yaml`` ``models``) to try."""

    models: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class RoutingExplanation:
    summary: str
    task_type: str
    chain: tuple[str, ...]
    reasons: tuple[dict[str, Any], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"summary": self.summary, "task_type": self.task_type, "chain": list(self.chain),
                "reasons": [dict(r) for r in self.reasons]}


@dataclass(frozen=True, slots=True)
class Attempt:
    """One provider attempt of a request (or a target skipped without a call), successful or not."""

    model: str
    provider: str
    code: str  # "ok", the RhetorError code, or why the target was skipped
    status: int | None = None
    message: str = ""
    duration_ms: float = 0.0
    retry: int = 0
    """0 for a target's first try, then 1, 2, ... for its retries."""
    waited_s: float = 0.0
    """Backoff (or Retry-After) waited before this try."""
    skipped: bool = False
    """True when the target was not called (unavailable, circuit open, context window too small)."""
    circuit: str | None = None
    """The model's circuit state after this attempt, when it is not closed."""

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"model": self.model, "provider": self.provider, "code": self.code,
                               "status": self.status, "message": self.message}
        if self.retry:
            out["retry"] = self.retry
        if self.waited_s:
            out["waited_s"] = round(self.waited_s, 3)
        if self.skipped:
            out["skipped"] = True
        if self.circuit:
            out["circuit"] = self.circuit
        return out


@dataclass(frozen=True, slots=True)
class Completion:
    """A model's whole answer, whichever target produced it."""

    text: str
    model: str  # Rhetor's model name
    model_id: str  # the provider's model id
    provider: str
    usage: Usage
    cost_usd: float
    finish_reason: str | None = None
    attempts: tuple[Attempt, ...] = ()


@dataclass(frozen=True, slots=True)
class Spend:
    """What one provider call cost: from its usage, or estimated when the call was cut short."""

    model: str
    provider: str
    usage: Usage
    cost_usd: float
    estimated: bool = False
    """True when the provider never reported usage (the client left mid-call): charged from what was seen."""


@dataclass(frozen=True, slots=True)
class BudgetDecision:
    """What the budget stage decided for a request."""

    policy: str
    reserved_usd: float
    scopes: tuple[str, ...]
    warnings: tuple[str, ...] = ()
    downgraded_from: tuple[str, ...] | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"policy": self.policy, "reserved_usd": self.reserved_usd, "scopes": list(self.scopes)}
        if self.warnings:
            out["warnings"] = list(self.warnings)
        if self.downgraded_from is not None:
            out["downgraded_from"] = list(self.downgraded_from)
        return out


class Turn(msgspec.Struct, frozen=True, gc=False):
    """One message of a conversation with its token count (counted once) and stored sequence number.

    A frozen msgspec ``Struct``, not a dataclass: a conversation's whole stored history is Turns on every request.
    It holds the ``Message`` it stands for, made once with it, so the messages sent upstream are the Turns' own
    (``Conversation.messages``), not copies made per request: a long history's Turns, and so its Messages, are
    kept by the storage between requests (``history_cache``). ``Turn.of`` makes one from its parts."""

    message: Message
    tokens: int
    seq: int | None = None

    @classmethod
    def of(cls, role: Role, content: str, tokens: int, seq: int | None = None) -> Turn:
        return cls(Message(role, content), tokens, seq)

    @property
    def role(self) -> Role:
        return self.message.role

    @property
    def content(self) -> str:
        return self.message.content


@dataclass(frozen=True, slots=True)
class Conversation:
    """A request's messages in the light of its stored context: leading system messages, the stored
    summary of older turns, the stored history after it, and this request's new messages."""

    context_id: str | None
    system: tuple[Turn, ...]
    history: tuple[Turn, ...]
    new: tuple[Turn, ...]
    summary: str | None = None
    summary_upto: int = 0
    summary_tokens: int = 0
    history_tokens: int | None = None
    """The sum of ``history``'s token counts when the storage said it (``None``: not known, add them up)."""

    def messages(self, history: tuple[Turn, ...] | None = None, summary: str | None = None) -> Messages:
        kept = self.history if history is None else history
        text = self.summary if summary is None else summary
        out = [t.message for t in self.system]
        if text:
            out.append(Message("system", f"Summary of the earlier conversation: {text}"))
        out += [t.message for t in kept]
        out += [t.message for t in self.new]
        return Messages(out)


@dataclass(frozen=True, slots=True)
class Payloads:
    """The messages to send to each model of the chain, each fitted to that model's context window."""

    by_model: dict[str, Messages]
    notes: dict[str, dict[str, Any]] = field(default_factory=dict)
