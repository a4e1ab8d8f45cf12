"""``context_load`` and ``context_save``: conversations kept by ``context_id`` (``component:session``).

``context_load`` reads the stored context (its summary of older turns, if any, and the history after
it) and combines it with the request's messages into a ``Conversation``; token counts are stored per
message, so history is never re-tokenised. A context idle longer than its TTL (``ttl_s``, or per
component ``ttl_by_component``) starts afresh. Without a ``context_id`` the conversation is just the
request.

``context_save`` appends this request's user messages and the answer in one transaction after the
answer, so concurrent requests on one context never interleave or lose a pair. System messages are not
stored (the system-prompt stage adds them on every request).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import Field

from rhetor.errors import PipelineRunError
from rhetor.stages.base import BuildContext, RunContext, Stage, StageConfig, StageResult
from rhetor.storage import StoredMessageIn
from rhetor.tokens import estimate_tokens
from rhetor.types import Completion, Conversation, Messages, RequestOptions, Turn

__all__ = ["ContextLoadStage", "ContextSaveStage", "expiry_for"]

_FRAMING = 4


def _tokens(text: str) -> int:
    return estimate_tokens(text) + _FRAMING


class ContextLoadConfig(StageConfig):
    ttl_s: float | None = Field(None, gt=0)
    """Contexts idle longer than this start afresh (unset: kept until deleted)."""
    ttl_by_component: dict[str, float] = {}
    """Per-component TTL in seconds, overriding ``ttl_s``."""


def expiry_for(config: ContextLoadConfig, component: str | None) -> float | None:
    if component and component in config.ttl_by_component:
        return config.ttl_by_component[component]
    return config.ttl_s


class _NeedsStorage:
    def __init__(self, build: BuildContext) -> None:
        self._resources = build.resources

    def _contexts(self) -> Any:
        if self._resources is None:
            raise PipelineRunError("context stages need durable storage; this engine was built without it")
        return self._resources.storage.contexts


class ContextLoadStage(Stage, _NeedsStorage):
    type_name = "context_load"
    Config = ContextLoadConfig
    inputs = {"messages": Messages, "options": RequestOptions}
    outputs = {"conversation": Conversation}

    def __init__(self, stage_id: str, config: ContextLoadConfig, build: BuildContext) -> None:
        Stage.__init__(self, stage_id, config, build)
        _NeedsStorage.__init__(self, build)
        self.config: ContextLoadConfig = config

    def _request_only(self, messages: Messages, context_id: str | None) -> Conversation:
        system = tuple(Turn(m, _tokens(m.content)) for m in messages if m.role == "system")
        new = tuple(Turn(m, _tokens(m.content)) for m in messages if m.role != "system")
        return Conversation(context_id, system, (), new)

    def explain(self, ctx: RunContext, inputs: Mapping[str, Any]) -> StageResult:
        conversation = self._request_only(inputs["messages"], inputs["options"].context_id)
        return StageResult({"conversation": conversation}, decision="would load the stored context",
                           why=f"context_id={conversation.context_id}" if conversation.context_id else "no context_id")

    async def run(self, ctx: RunContext, inputs: Mapping[str, Any]) -> StageResult:
        options: RequestOptions = inputs["options"]
        base = self._request_only(inputs["messages"], options.context_id)
        if not options.context_id:
            return StageResult({"conversation": base}, decision="no context", why="the request has no context_id")
        contexts = self._contexts()
        record = await contexts.history(options.context_id)
        ttl = expiry_for(self.config, options.component or (record.component if record else None))
        if record is not None and ttl is not None:
            last = record.last_activity if record.last_activity.tzinfo else record.last_activity.replace(tzinfo=UTC)
            if last < datetime.now(UTC) - timedelta(seconds=ttl):
                await contexts.delete(options.context_id)
                return StageResult({"conversation": base}, decision="expired context started afresh",
                                   why=f"idle longer than its ttl of {ttl:g} s")
        if record is None:
            return StageResult({"conversation": base}, decision="new context",
                               why=f"{options.context_id} not stored yet")
        summary = record.summary
        upto = summary.upto_seq if summary else 0
        history = record.messages  # Turns made by the storage, a long history's kept from request to request
        conversation = Conversation(options.context_id, base.system, history, base.new,
                                    summary.text if summary else None, upto, summary.tokens if summary else 0,
                                    record.tokens)
        why = f"{len(history)} stored messages" + (f" after a summary of messages 1–{upto}" if summary else "")
        return StageResult({"conversation": conversation}, decision=f"loaded {options.context_id}", why=why,
                           details={"messages": len(history), "summary_upto": upto,
                                    "tokens": record.tokens + conversation.summary_tokens})


class ContextSaveStage(Stage, _NeedsStorage):
    type_name = "context_save"
    inputs = {"conversation": Conversation, "completion": Completion, "options": RequestOptions}
    outputs: Mapping[str, type] = {}

    def __init__(self, stage_id: str, config: StageConfig, build: BuildContext) -> None:
        Stage.__init__(self, stage_id, config, build)
        _NeedsStorage.__init__(self, build)

    async def run(self, ctx: RunContext, inputs: Mapping[str, Any]) -> StageResult:
        conversation: Conversation = inputs["conversation"]
        if not conversation.context_id:
            return StageResult({}, decision="not stored", why="the request has no context_id")
        completion: Completion = inputs["completion"]
        pair = [StoredMessageIn(t.role, t.content, t.tokens) for t in conversation.new]
        pair.append(StoredMessageIn("assistant", completion.text, completion.usage.output_tokens + _FRAMING))
        stored = await self._contexts().append(conversation.context_id, pair, component=inputs["options"].component)
        return StageResult({}, decision=f"stored {len(stored)} messages",
                           why=f"{conversation.context_id} now ends at message {stored[-1].seq}")
