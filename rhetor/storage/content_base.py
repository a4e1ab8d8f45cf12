"""The content repositories of a ``Storage``: conversations, prompt templates and system prompts.

Re-exported by ``rhetor.storage.base`` (they are part of the storage interface; this module only keeps
``base.py`` short). Every method is one atomic unit: it happens completely or not at all, and no other
call — in this process or another sharing the database — sees it half done.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from datetime import datetime

from rhetor.storage.content_records import (
    ContextHistory,
    ContextInfo,
    ContextRecord,
    PromptRecord,
    StoredMessage,
    StoredMessageIn,
    TemplateRecord,
)
from rhetor.types import Turn

__all__ = ["ContextRepository", "PromptRepository", "TemplateRepository"]


class ContextRepository(ABC):
    """Conversations by context id (by convention ``component:session``), with an optional summary."""

    __slots__ = ()

    @abstractmethod
    async def append(
        self,
        context_id: str,
        messages: Sequence[StoredMessageIn],
        *,
        component: str | None = None,
        now: datetime | None = None,
    ) -> list[StoredMessage]:
        """Append messages to a context, creating the context on first use.

        All of ``messages`` get consecutive sequence numbers in one transaction: they are stored together
        or not at all, and never interleaved with the messages of a concurrent ``append`` to the context.

        Args:
            context_id: The context to append to.
            messages: The messages, oldest first, each with its token count (stored as given).
            component: The component recorded when the context is created; when ``None``, the
                ``component:`` prefix of ``context_id`` (if any). An existing context keeps its component.
            now: The time recorded on the messages and as the context's last activity (default: now).

        Returns:
            The messages as stored, with their sequence numbers.
        """
        raise NotImplementedError

    @abstractmethod
    async def load(self, context_id: str) -> ContextRecord | None:
        """Read a whole context consistently (messages in sequence order, and its summary).

        Args:
            context_id: The context to read.

        Returns:
            The context, or ``None`` when unknown.
        """
        raise NotImplementedError

    async def history(self, context_id: str) -> ContextHistory | None:
        """The part of a context a pipeline continues from, read consistently: the summary and the messages after
        it (``ContextHistory``). Same content as ``load`` minus what the summary covers; backends read it leaner.

        Args:
            context_id: The context to read.

        Returns:
            The history, or ``None`` when the context is unknown.
        """
        record = await self.load(context_id)
        if record is None:
            return None
        upto = record.summary.upto_seq if record.summary else 0
        turns = tuple(Turn.of(m.role, m.content, m.tokens, m.seq) for m in record.messages if m.seq > upto)
        return ContextHistory(record.component, record.last_activity, record.summary, turns,
                              sum(t.tokens for t in turns))

    @abstractmethod
    async def list(self, *, component: str | None = None, limit: int = 100, offset: int = 0) -> list[ContextInfo]:
        """List contexts, most recently active first, with message and token counts (no message bodies).

        Args:
            component: Only the contexts of this component; ``None`` for all.
            limit: Most contexts returned.
            offset: Contexts skipped first (for paging).

        Returns:
            The contexts, by last activity descending (ties by id).
        """
        raise NotImplementedError

    @abstractmethod
    async def delete(self, context_id: str) -> bool:
        """Delete a context with its messages and summary.

        Args:
            context_id: The context to delete.

        Returns:
            True when it existed.
        """
        raise NotImplementedError

    @abstractmethod
    async def put_summary(
        self, context_id: str, *, upto_seq: int, text: str, tokens: int, now: datetime | None = None
    ) -> bool:
        """Store the summary of a context's messages up to ``upto_seq``.

        A context has at most one summary: the new one replaces the stored one only when its ``upto_seq``
        is at least the stored one's (a slow summariser never overwrites a newer summary).

        Args:
            context_id: The context summarised.
            upto_seq: The last message the summary covers.
            text: The summary.
            tokens: Its token count (stored as given).
            now: Its creation time (default: now).

        Returns:
            True when stored; False when the context is unknown or has a summary of later messages.
        """
        raise NotImplementedError

    @abstractmethod
    async def expire(self, *, before: datetime, component: str | None = None) -> int:
        """Delete the contexts inactive since before ``before``, with their messages and summaries.

        Args:
            before: Contexts whose last activity is strictly earlier are deleted.
            component: Only the contexts of this component; ``None`` for all.

        Returns:
            How many contexts were deleted.
        """
        raise NotImplementedError


class TemplateRepository(ABC):
    """Prompt templates by name."""

    __slots__ = ()

    @abstractmethod
    async def put(self, template: TemplateRecord, *, now: datetime | None = None) -> TemplateRecord:
        """Create or replace the template of that name.

        Args:
            template: The template; its timestamps are ignored.
            now: The update time (default: now); also the creation time of a new template.

        Returns:
            The template as stored: ``updated_at`` is ``now``; ``created_at`` is kept from the replaced one.
        """
        raise NotImplementedError

    @abstractmethod
    async def get(self, name: str) -> TemplateRecord | None:
        """Read one template.

        Args:
            name: The template's name.

        Returns:
            The template, or ``None`` when unknown.
        """
        raise NotImplementedError

    @abstractmethod
    async def list(self) -> list[TemplateRecord]:
        """Read every template.

        Returns:
            The templates, by name.
        """
        raise NotImplementedError

    @abstractmethod
    async def delete(self, name: str) -> bool:
        """Delete a template.

        Args:
            name: The template's name.

        Returns:
            True when it existed.
        """
        raise NotImplementedError


class PromptRepository(ABC):
    """System prompts per component; at most one of a component's prompts is its default."""

    __slots__ = ()

    @abstractmethod
    async def put(self, prompt: PromptRecord, *, now: datetime | None = None) -> PromptRecord:
        """Create or replace the prompt of that id (a new id is assigned when it is empty).

        Saving a prompt with ``is_default`` clears the flag on the component's other prompts in the same
        transaction, so a component never has two defaults (nor, in between, none).

        Args:
            prompt: The prompt; its timestamps are ignored.
            now: The update time (default: now); also the creation time of a new prompt.

        Returns:
            The prompt as stored, with its id; ``created_at`` is kept from the replaced one.
        """
        raise NotImplementedError

    @abstractmethod
    async def get(self, prompt_id: str) -> PromptRecord | None:
        """Read one prompt.

        Args:
            prompt_id: The prompt's id.

        Returns:
            The prompt, or ``None`` when unknown.
        """
        raise NotImplementedError

    @abstractmethod
    async def list(self, component: str | None = None) -> list[PromptRecord]:
        """Read the prompts, of one component or all.

        Args:
            component: Only this component's prompts; ``None`` for all.

        Returns:
            The prompts, by component, then name, then id.
        """
        raise NotImplementedError

    @abstractmethod
    async def default_for(self, component: str) -> PromptRecord | None:
        """Read a component's default prompt.

        Args:
            component: The component.

        Returns:
            Its default prompt, or ``None`` when it has none.
        """
        raise NotImplementedError

    @abstractmethod
    async def delete(self, prompt_id: str) -> bool:
        """Delete a prompt (deleting the default leaves its component without one).

        Args:
            prompt_id: The prompt's id.

        Returns:
            True when it existed.
        """
        raise NotImplementedError
