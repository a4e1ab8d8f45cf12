"""Wire formats of the HTTP API: request bodies and the consistent response shape.

Kept apart from the config Specs: these are what callers send and receive, documented in the seeds
(`{message, model, provider, context, finished, timestamp}`) plus usage, cost and the trace summary.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Literal

import msgspec
from pydantic import BaseModel, ConfigDict, Field

from rhetor.engine.run import RunResult, StageTrace
from rhetor.errors import RhetorError
from rhetor.stages.base import Request
from rhetor.types import BudgetDecision, Completion, Message, Messages, RequestOptions

__all__ = ["ChatIn", "ChunkEvents", "MessageIn", "completion_body", "error_event", "final_event", "sse", "timestamp"]


class _RequestFields(BaseModel):
    """Fields every generation endpoint accepts besides the text itself."""

    model_config = ConfigDict(extra="forbid")

    context_id: str | None = Field(None, max_length=256)
    task_type: str | None = Field(None, max_length=64)
    component: str | None = Field(None, max_length=128)
    streaming: bool = False
    system_prompt: str | None = None
    model: str | None = None
    provider: str | None = None
    pipeline: str | None = None
    temperature: float | None = Field(None, ge=0, le=2)
    max_tokens: int | None = Field(None, gt=0, le=1_000_000)
    stop: list[str] | None = None
    routing_parameters: dict[str, Any] | None = None
    priority: Literal["low", "normal", "high"] | None = None

    def options(self, *, stream: bool, active: dict[str, str] | None = None) -> RequestOptions:
        """The request options; ``active`` (POST /provider) applies when neither model nor task is named."""
        model, provider = self.model, self.provider
        if active and not model and not self.task_type and not provider:
            model, provider = active.get("model"), active.get("provider")
        return RequestOptions(
            task_type=self.task_type, component=self.component, context_id=self.context_id, model=model,
            provider=provider, system_prompt=self.system_prompt, temperature=self.temperature,
            max_tokens=self.max_tokens, stop=tuple(self.stop or ()), stream=stream,
            routing_parameters=dict(self.routing_parameters or {}),
        )


class MessageIn(_RequestFields):
    """Body of ``POST /message`` and ``POST /stream``."""

    message: str = Field(min_length=1, max_length=1_000_000)

    def to_request(self, request_id: str, *, stream: bool, active: dict[str, str] | None = None) -> Request:
        return Request.from_text(self.message, self.options(stream=stream, active=active), request_id)


class ChatMessageIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["system", "user", "assistant"]
    content: str = Field(max_length=1_000_000)


class ChatIn(_RequestFields):
    """Body of ``POST /chat``: a whole conversation, oldest message first."""

    messages: list[ChatMessageIn] = Field(min_length=1, max_length=10_000)

    def to_request(self, request_id: str, *, stream: bool, active: dict[str, str] | None = None) -> Request:
        messages = Messages(Message(m.role, m.content) for m in self.messages)
        return Request(messages, self.options(stream=stream, active=active), request_id)


def timestamp() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def trace_summary(trace: tuple[StageTrace, ...]) -> list[dict[str, Any]]:
    return [{"id": t.id, "type": t.type, "status": t.status, "decision": t.decision, "why": t.why,
             "duration_ms": round(t.duration_ms, 3)} for t in trace]


def _completion_fields(c: Completion) -> dict[str, Any]:
    return {
        "model": c.model,
        "model_id": c.model_id,
        "provider": c.provider,
        "usage": c.usage.to_dict(),
        "cost": {"usd": c.cost_usd},
        "finish_reason": c.finish_reason,
        "attempts": [a.to_dict() for a in c.attempts],
    }


def _budget(result: RunResult) -> BudgetDecision | None:
    for sockets in result.outputs.values():
        for value in sockets.values():
            if isinstance(value, BudgetDecision):
                return value
    return None


def completion_body(result: RunResult, context: str | None, request_id: str) -> dict[str, Any]:
    c = result.completion
    explanation = result.explanation
    budget = _budget(result)
    extra: dict[str, Any] = {}
    if budget is not None:
        extra["budget"] = budget.to_dict()
        if budget.warnings:
            extra["budget_warning"] = "; ".join(budget.warnings)
    return {
        "message": c.text,
        **_completion_fields(c),
        "context": context,
        "finished": True,
        "timestamp": timestamp(),
        "pipeline": result.pipeline,
        "routing_explanation": explanation.to_dict() if explanation else None,
        "trace": trace_summary(result.trace),
        "request_id": request_id,
        **extra,
    }


def sse(payload: dict[str, Any]) -> bytes:
    """One SSE event: compact UTF-8 JSON, encoded by msgspec as Litestar encodes JSON bodies (an order of
    magnitude faster than ``json.dumps``; floats in shortest form, e.g. ``1.5e-5``)."""
    return b"data: " + msgspec.json.encode(payload) + b"\n\n"


class ChunkEvents:
    """``sse(make(text))`` for the text chunks of one stream, whose events differ only in the text.

    The event is encoded once with a random marker where the text goes and split there; each chunk then costs one
    string encode and a join (a ``chat.completion.chunk`` event: 1.3 → 0.13 µs; a JSON string encodes the same
    wherever it sits). The first chunk is also encoded the plain way and compared: should they ever differ (the
    marker showing up in another field, a payload that reorders its keys), the stream's chunks are all encoded the
    plain way."""

    __slots__ = ("_checked", "_make", "_parts")

    def __init__(self, make: Callable[[str], dict[str, Any]]) -> None:
        self._make = make
        marker = f"\x00{os.urandom(8).hex()}\x00"
        self._parts: list[bytes] | None = sse(make(marker)).split(msgspec.json.encode(marker))
        self._checked = False

    def __call__(self, text: str) -> bytes:
        parts = self._parts
        if parts is None:
            return sse(self._make(text))
        event = msgspec.json.encode(text).join(parts)
        if not self._checked:
            self._checked = True
            plain = sse(self._make(text))
            if event != plain:
                self._parts = None
                return plain
        return event


def final_event(result: RunResult, context: str | None, request_id: str) -> bytes:
    body = completion_body(result, context, request_id)
    return sse({"chunk": "", "done": True, **body})


def error_event(exc: RhetorError, context: str | None, request_id: str) -> bytes:
    payload: dict[str, Any] = {"chunk": "", "done": True, "finished": False, **exc.to_dict(),
                               "context": context, "timestamp": timestamp(), "request_id": request_id}
    trace = getattr(exc, "trace", None)
    if trace:
        payload["trace"] = trace_summary(trace)
    return sse(payload)
