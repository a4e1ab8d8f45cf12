"""The content repositories in dictionaries (``memory://``): nothing survives the process.

Atomicity: no method awaits while it reads or changes the dictionaries, so each runs to completion
before the event loop switches to another task. Records are copied in and out, so a caller mutating a
returned list never changes what is stored.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from rhetor.storage.content_base import ContextRepository, PromptRepository, TemplateRepository
from rhetor.storage.content_records import (
    ContextInfo,
    ContextRecord,
    PromptRecord,
    StoredMessage,
    StoredMessageIn,
    Summary,
    TemplateRecord,
    check_count,
    component_of,
)

__all__ = ["MemoryContexts", "MemoryPrompts", "MemoryTemplates"]


def _now(now: datetime | None) -> datetime:
    return datetime.now(UTC) if now is None else now


@dataclass(slots=True)
class _Context:
    component: str | None
    created_at: datetime
    last_activity: datetime
    messages: list[StoredMessage] = field(default_factory=list)
    summary: Summary | None = None


class MemoryContexts(ContextRepository):
    def __init__(self) -> None:
        self._contexts: dict[str, _Context] = {}

    async def append(
        self,
        context_id: str,
        messages: Sequence[StoredMessageIn],
        *,
        component: str | None = None,
        now: datetime | None = None,
    ) -> list[StoredMessage]:
        at = _now(now)
        ctx = self._contexts.get(context_id)
        if ctx is None:
            ctx = self._contexts[context_id] = _Context(component or component_of(context_id), at, at)
        elif ctx.component is None:
            ctx.component = component or component_of(context_id)
        start = len(ctx.messages) + 1
        stored = [StoredMessage(start + i, m.role, m.content, m.tokens, at) for i, m in enumerate(messages)]
        ctx.messages.extend(stored)
        ctx.last_activity = max(ctx.last_activity, at)
        return stored

    async def load(self, context_id: str) -> ContextRecord | None:
        ctx = self._contexts.get(context_id)
        if ctx is None:
            return None
        return ContextRecord(context_id, ctx.component, ctx.created_at, ctx.last_activity, list(ctx.messages),
                             ctx.summary)

    async def list(self, *, component: str | None = None, limit: int = 100, offset: int = 0) -> list[ContextInfo]:
        rows = [
            ContextInfo(cid, c.component, len(c.messages), sum(m.tokens for m in c.messages), c.last_activity)
            for cid, c in self._contexts.items()
            if component is None or c.component == component
        ]
        rows.sort(key=lambda r: r.id)
        rows.sort(key=lambda r: r.last_activity, reverse=True)
        return rows[offset:offset + limit]

    async def delete(self, context_id: str) -> bool:
        return self._contexts.pop(context_id, None) is not None

    async def put_summary(
        self, context_id: str, *, upto_seq: int, text: str, tokens: int, now: datetime | None = None
    ) -> bool:
        check_count("upto_seq", upto_seq)
        check_count("tokens", tokens)
        ctx = self._contexts.get(context_id)
        if ctx is None or (ctx.summary is not None and ctx.summary.upto_seq > upto_seq):
            return False
        ctx.summary = Summary(upto_seq, text, tokens, _now(now))
        return True

    async def expire(self, *, before: datetime, component: str | None = None) -> int:
        doomed = [cid for cid, c in self._contexts.items()
                  if c.last_activity < before and (component is None or c.component == component)]
        for cid in doomed:
            del self._contexts[cid]
        return len(doomed)


def _json(value: object) -> Any:
    """A deep copy as the SQL backends store it (JSON), so every backend returns the same values."""
    return json.loads(json.dumps(value, ensure_ascii=False, default=str))


def _copy_template(t: TemplateRecord) -> TemplateRecord:
    return replace(t, required=_json(list(t.required)), optional=_json(dict(t.optional)),
                   metadata=_json(dict(t.metadata)))


class MemoryTemplates(TemplateRepository):
    def __init__(self) -> None:
        self._templates: dict[str, TemplateRecord] = {}

    async def put(self, template: TemplateRecord, *, now: datetime | None = None) -> TemplateRecord:
        at = _now(now)
        old = self._templates.get(template.name)
        stored = replace(_copy_template(template), created_at=at if old is None else old.created_at, updated_at=at)
        self._templates[template.name] = stored
        return _copy_template(stored)

    async def get(self, name: str) -> TemplateRecord | None:
        t = self._templates.get(name)
        return None if t is None else _copy_template(t)

    async def list(self) -> list[TemplateRecord]:
        return [_copy_template(self._templates[n]) for n in sorted(self._templates)]

    async def delete(self, name: str) -> bool:
        return self._templates.pop(name, None) is not None


def _copy_prompt(p: PromptRecord) -> PromptRecord:
    return replace(p, tags=_json(list(p.tags)))


class MemoryPrompts(PromptRepository):
    def __init__(self) -> None:
        self._prompts: dict[str, PromptRecord] = {}

    async def put(self, prompt: PromptRecord, *, now: datetime | None = None) -> PromptRecord:
        at = _now(now)
        pid = prompt.id or uuid.uuid4().hex
        old = self._prompts.get(pid)
        stored = replace(_copy_prompt(prompt), id=pid, is_default=bool(prompt.is_default),
                         created_at=at if old is None else old.created_at, updated_at=at)
        if stored.is_default:
            for other in list(self._prompts.values()):
                if other.component == stored.component and other.is_default and other.id != pid:
                    self._prompts[other.id] = replace(other, is_default=False, updated_at=at)
        self._prompts[pid] = stored
        return _copy_prompt(stored)

    async def get(self, prompt_id: str) -> PromptRecord | None:
        p = self._prompts.get(prompt_id)
        return None if p is None else _copy_prompt(p)

    async def list(self, component: str | None = None) -> list[PromptRecord]:
        found = [p for p in self._prompts.values() if component is None or p.component == component]
        return [_copy_prompt(p) for p in sorted(found, key=lambda p: (p.component, p.name, p.id))]

    async def default_for(self, component: str) -> PromptRecord | None:
        return next((_copy_prompt(p) for p in self._prompts.values() if p.component == component and p.is_default),
                    None)

    async def delete(self, prompt_id: str) -> bool:
        return self._prompts.pop(prompt_id, None) is not None
