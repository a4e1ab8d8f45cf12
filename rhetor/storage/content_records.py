"""Plain values exchanged with the content repositories: conversations, templates and system prompts.

Records are frozen dataclasses; ``to_dict()`` gives a JSON-ready dict (datetimes as ISO 8601 strings).
Times are timezone-aware UTC datetimes. Token counts are whatever the caller counted when it stored the
text; storage keeps them and never recounts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from rhetor.types import Turn

__all__ = [
    "ContextHistory",
    "ContextInfo",
    "ContextRecord",
    "PromptRecord",
    "StoredMessage",
    "StoredMessageIn",
    "Summary",
    "TemplateRecord",
    "check_count",
    "component_of",
]


def _iso(at: datetime | None) -> str | None:
    return None if at is None else at.isoformat()


def check_count(name: str, value: int) -> None:
    """Refuse a negative (or non-integer) token count or sequence number, the same way on every backend."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be a non-negative integer, not {value!r}")


def component_of(context_id: str) -> str | None:
    """The ``component`` of a ``component:session`` context id, or ``None`` without such a prefix."""
    head, sep, _ = context_id.partition(":")
    return head if sep and head else None


@dataclass(frozen=True, slots=True)
class StoredMessageIn:
    """A message to append to a context, with its token count (counted once, by the caller)."""

    role: str
    content: str
    tokens: int = 0

    def __post_init__(self) -> None:
        check_count("tokens", self.tokens)


@dataclass(frozen=True, slots=True)
class StoredMessage:
    """A message as stored: ``seq`` numbers a context's messages 1, 2, 3, ... in append order."""

    seq: int
    role: str
    content: str
    tokens: int
    created_at: datetime

    def to_dict(self) -> dict[str, Any]:
        return {"seq": self.seq, "role": self.role, "content": self.content, "tokens": self.tokens,
                "created_at": _iso(self.created_at)}


@dataclass(frozen=True, slots=True)
class Summary:
    """A summary of a context's messages 1..``upto_seq``."""

    upto_seq: int
    text: str
    tokens: int
    created_at: datetime

    def to_dict(self) -> dict[str, Any]:
        return {"upto_seq": self.upto_seq, "text": self.text, "tokens": self.tokens,
                "created_at": _iso(self.created_at)}


@dataclass(frozen=True, slots=True)
class ContextRecord:
    """A whole conversation: its messages in ``seq`` order and its summary, if any."""

    id: str
    component: str | None
    created_at: datetime
    last_activity: datetime
    messages: list[StoredMessage] = field(default_factory=list)
    summary: Summary | None = None

    @property
    def tokens(self) -> int:
        return sum(m.tokens for m in self.messages)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "component": self.component, "created_at": _iso(self.created_at),
                "last_activity": _iso(self.last_activity), "messages": [m.to_dict() for m in self.messages],
                "summary": None if self.summary is None else self.summary.to_dict()}


@dataclass(frozen=True, slots=True)
class ContextHistory:
    """What a pipeline needs to continue a conversation (``ContextRepository.history``): its summary, if any, and
    only the messages after it, in ``seq`` order, as the ``Turn`` values the pipeline works with (no per-message
    record, no per-message timestamp: this is read on every request of a conversation, and the SQL backends keep
    the ``Turn`` values of a long history between requests, so continuing it makes only the new ones), and
    ``tokens``, the sum of their token counts."""

    component: str | None
    last_activity: datetime
    summary: Summary | None
    messages: tuple[Turn, ...]
    tokens: int


@dataclass(frozen=True, slots=True)
class ContextInfo:
    """One line of a context listing: counts without the messages themselves."""

    id: str
    component: str | None
    message_count: int
    tokens: int
    last_activity: datetime

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "component": self.component, "message_count": self.message_count,
                "tokens": self.tokens, "last_activity": _iso(self.last_activity)}


@dataclass(frozen=True, slots=True)
class TemplateRecord:
    """A stored prompt template (``rhetor.templates.TemplateDef`` plus timestamps).

    ``created_at``/``updated_at`` are set by the repository; what a caller passes in is ignored.
    """

    name: str
    content: str
    required: list[str] = field(default_factory=list)
    optional: dict[str, str] = field(default_factory=dict)
    description: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)
    created_at: datetime | None = None
    updated_at: datetime | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "content": self.content, "required": list(self.required),
                "optional": dict(self.optional), "description": self.description, "metadata": dict(self.metadata),
                "created_at": _iso(self.created_at), "updated_at": _iso(self.updated_at)}


@dataclass(frozen=True, slots=True)
class PromptRecord:
    """A stored system prompt of a component. An empty ``id`` asks the repository to assign one.

    ``created_at``/``updated_at`` are set by the repository; what a caller passes in is ignored.
    """

    id: str
    component: str
    name: str
    content: str
    description: str = ""
    tags: list[str] = field(default_factory=list)
    is_default: bool = False
    created_at: datetime | None = None
    updated_at: datetime | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "component": self.component, "name": self.name, "content": self.content,
                "description": self.description, "tags": list(self.tags), "is_default": self.is_default,
                "created_at": _iso(self.created_at), "updated_at": _iso(self.updated_at)}
